"""Image references parse as Docker's (distribution/reference ParseNormalizedNamed)."""

from __future__ import annotations

import pytest

from supervisor.images.reference import Reference, ReferenceError, parse

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, want, familiar", [
    ("busybox", ("docker.io", "library/busybox", "latest", None), "busybox:latest"),
    ("busybox:1.36", ("docker.io", "library/busybox", "1.36", None), "busybox:1.36"),
    ("library/busybox", ("docker.io", "library/busybox", "latest", None), "busybox:latest"),
    ("docker.io/library/busybox:1", ("docker.io", "library/busybox", "1", None), "busybox:1"),
    ("index.docker.io/shop/web", ("docker.io", "shop/web", "latest", None), "shop/web:latest"),
    ("shop/web:2", ("docker.io", "shop/web", "2", None), "shop/web:2"),
    ("localhost/app", ("localhost", "app", "latest", None), "localhost/app:latest"),
    ("localhost:5000/team/app:v2", ("localhost:5000", "team/app", "v2", None), "localhost:5000/team/app:v2"),
    ("127.0.0.1:5000/x", ("127.0.0.1:5000", "x", "latest", None), "127.0.0.1:5000/x:latest"),
    ("ghcr.io/o/r/deep/name:1.0-rc_1", ("ghcr.io", "o/r/deep/name", "1.0-rc_1", None), "ghcr.io/o/r/deep/name:1.0-rc_1"),
    (f"busybox@{D}", ("docker.io", "library/busybox", None, D), f"busybox@{D}"),
    (f"reg:443/a/b:t@{D}", ("reg:443", "a/b", "t", D), f"reg:443/a/b:t@{D}"),
    ("Reg.Example/x", ("Reg.Example", "x", "latest", None), "Reg.Example/x:latest"),
    ("a__b/c-d--e.f", ("docker.io", "a__b/c-d--e.f", "latest", None), "a__b/c-d--e.f:latest"),
])
def test_parses_like_docker(text, want, familiar):
    r = parse(text)
    assert tuple(r) == want
    assert r.familiar == familiar
    assert parse(r.canonical) == r


def test_reference_asked_of_the_registry():
    assert parse("busybox").reference == "latest"
    assert parse(f"busybox:1@{D}").reference == D
    assert Reference("docker.io", "library/busybox", "1", None).canonical == "docker.io/library/busybox:1"


@pytest.mark.parametrize("bad", [
    "", "Upper", "a//b", "a:", "a:-x", "a@sha256:00", "-a", "a_:x", "a/", "/a", "a b", "busybox@md5:" + "0" * 32,
    "a:" + "t" * 129, "a___b", "host:port:1/x", "x/" + "a" * 260,
])
def test_refuses(bad):
    with pytest.raises(ReferenceError) as e:
        parse(bad)
    assert "\n" not in str(e.value)
