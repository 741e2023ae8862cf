"""Layers unpacked into the store: OCI whiteouts and opaque directories as overlayfs's, hard links,
device files skipped, paths escaping the layer refused with nothing left behind; gzip and zstd;
`pysup image load` of OCI layouts and docker save tarballs; garbage collection."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from supervisor.images.archive import load
from supervisor.images.config import (effective_stack, image_healthcheck, merge_healthcheck, parse_signal,
                                      with_image_config)
from supervisor.images.commands import policy_max_age, should_pull
from supervisor.images.store import ImageStoreError

from ocitools import make_oci_layout, tar_bytes

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (whiteouts are device nodes, trusted xattrs)")


def commit(store, tmp, raw: bytes, *, gz: bool = True) -> tuple[str, Path]:
    data = gzip.compress(raw) if gz else raw
    blob = tmp / f"blob-{hashlib.sha256(data).hexdigest()[:8]}"
    blob.write_bytes(data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    store.commit_layer(digest, str(blob), what="image t:1")
    return digest, Path(store.layer_path(digest))


def store_is_clean(store) -> bool:
    tmpd = Path(store.tmp_dir)
    return (not tmpd.exists() or not list(tmpd.iterdir())) and (
        not Path(store.layers_dir).exists() or not list(Path(store.layers_dir).iterdir()))


@root_only
def test_whiteouts_and_opaque_dirs_become_overlayfs_ones(store, tmp):
    _, layer = commit(store, tmp, tar_bytes([
        ("etc", "d", None), ("etc/.wh.motd", "f", ""), ("var", "d", None), ("var/cache", "d", None),
        ("var/cache/.wh..wh..opq", "f", ""), ("var/cache/new", "f", "n"), ("gone/.wh.x", "f", ""),
        (".wh..wh.plnk", "d", None)]))
    wh = os.lstat(layer / "etc/motd")
    assert stat.S_ISCHR(wh.st_mode) and os.major(wh.st_rdev) == 0 and os.minor(wh.st_rdev) == 0
    assert os.getxattr(layer / "var/cache", "trusted.overlay.opaque") == b"y"
    assert (layer / "var/cache/new").read_text() == "n"
    assert stat.S_ISCHR(os.lstat(layer / "gone/x").st_mode)
    assert not any(n.startswith(".wh.") for _, ds, fs in os.walk(layer) for n in ds + fs)


@root_only
def test_whiteouts_hide_lower_layers_in_a_real_overlay(store, tmp):
    _, base = commit(store, tmp, tar_bytes([("a", "f", "1"), ("b", "f", "2"), ("d", "d", None), ("d/old", "f", "o")]))
    _, top = commit(store, tmp, tar_bytes([(".wh.a", "f", ""), ("d", "d", None), ("d/.wh..wh..opq", "f", ""),
                                           ("d/new", "f", "n")]))
    mnt = tmp / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={top}:{base}", str(mnt)], check=True)
    try:
        assert sorted(os.listdir(mnt)) == ["b", "d"]
        assert os.listdir(mnt / "d") == ["new"]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@root_only
def test_hard_links_kept_devices_skipped(store, tmp):
    _, layer = commit(store, tmp, tar_bytes([("bin", "d", None), ("bin/x", "f", "exe"), ("bin/y", "h", "bin/x"),
                                             ("dev", "d", None), ("dev/null", "c", None)]))
    assert os.stat(layer / "bin/x").st_ino == os.stat(layer / "bin/y").st_ino
    assert not os.path.lexists(layer / "dev/null")


@root_only
def test_zstd_layer(store, tmp):
    if shutil.which("zstd") is None:
        pytest.skip("needs zstd")
    raw = tar_bytes([("hello", "f", "zstd!")])
    data = subprocess.run(["zstd", "-q", "-c"], input=raw, stdout=subprocess.PIPE, check=True).stdout
    blob = tmp / "z"
    blob.write_bytes(data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    store.commit_layer(digest, str(blob), what="image z:1")
    assert (Path(store.layer_path(digest)) / "hello").read_text() == "zstd!"


@pytest.mark.parametrize("members, why", [
    ([("../evil", "f", "x")], "escapes"),
    ([("/abs", "f", "x")], "absolute"),
    ([("a/../../evil", "f", "x")], "escapes"),
    ([("link", "h", "../../etc/passwd")], "escapes"),
])
def test_paths_escaping_the_layer_are_refused_and_nothing_is_left(store, tmp, members, why):
    with pytest.raises(ImageStoreError) as e:
        commit(store, tmp, tar_bytes(members))
    assert why in str(e.value) and "image t:1: layer sha256:" in str(e.value) and "\n" not in str(e.value)
    assert store_is_clean(store)


@root_only
def test_symlink_in_a_layer_never_leads_a_later_member_outside(store, tmp):
    outside = tmp / "outside"
    outside.mkdir()
    _, layer = commit(store, tmp, tar_bytes([("esc", "l", str(outside)), ("esc/pwned", "f", "x"),
                                             ("up", "l", "../../../.."), ("up/tmp/pwned2", "f", "y")]))
    assert not (outside / "pwned").exists()
    assert not Path("/tmp/pwned2").exists()


def test_a_truncated_layer_is_refused_and_nothing_is_left(store, tmp):
    data = gzip.compress(tar_bytes([("big", "f", os.urandom(200_000))]))[:5000]
    blob = tmp / "trunc"
    blob.write_bytes(data)
    with pytest.raises(ImageStoreError) as e:
        store.commit_layer("sha256:" + hashlib.sha256(data).hexdigest(), str(blob), what="image t:1")
    assert str(e.value).startswith("image t:1: layer sha256:")
    assert store_is_clean(store)


@root_only
def test_load_an_oci_layout_dir_and_tar_and_docker_save(store, tmp):
    base = tar_bytes([("bin", "d", None), ("bin/hello.sh", "f", "#!/bin/sh\necho hi\n")])
    top = tar_bytes([("etc", "d", None), ("etc/os", "f", "pysup")])
    info = make_oci_layout(tmp / "oci", [base, top], tag="docker.io/shop/web:2", config={"Cmd": ["/bin/hello.sh"]})
    [img] = load(store, str(tmp / "oci"))
    assert img.ref == "shop/web:2" and img.digest == info["manifest_digest"]
    assert img.layers == tuple(reversed(info["layers"])) and img.config == {"Cmd": ["/bin/hello.sh"]}
    assert (Path(store.layer_path(img.layers[0])) / "etc/os").read_text() == "pysup"
    # as a tar, a bare tag and --name
    make_oci_layout(tmp / "oci2", [base], tag="7")
    with tarfile.open(tmp / "oci2.tar", "w") as t:
        t.add(tmp / "oci2", arcname=".")
    with pytest.raises(ImageStoreError, match="--name"):
        load(store, str(tmp / "oci2.tar"))
    [img2] = load(store, str(tmp / "oci2.tar"), name="other")
    assert img2.ref == "other:7" and img2.layers == (info["layers"][0],)  # the layer is shared, stored once
    assert len(os.listdir(store.layers_dir)) == 2
    # docker save: manifest.json, uncompressed layer tars
    ds = tmp / "save"
    (ds / "l1").mkdir(parents=True)
    (ds / "l1/layer.tar").write_bytes(top)
    (ds / "cfg.json").write_text(json.dumps({"config": {"Env": ["A=1"]}}))
    (ds / "manifest.json").write_text(json.dumps([{"Config": "cfg.json", "RepoTags": ["saved:1", "saved:latest"],
                                                   "Layers": ["l1/layer.tar"]}]))
    with tarfile.open(tmp / "save.tar", "w") as t:
        for n in ("manifest.json", "cfg.json", "l1"):
            t.add(ds / n, arcname=n)
    imgs = load(store, str(tmp / "save.tar"))
    assert [i.ref for i in imgs] == ["saved:1", "saved:latest"] and imgs[0].config == {"Env": ["A=1"]}


@root_only
def test_load_refuses_a_blob_whose_digest_does_not_match(store, tmp):
    info = make_oci_layout(tmp / "oci", [tar_bytes([("a", "f", "1")])], tag="x:1")
    blob = tmp / "oci/blobs/sha256" / info["layers"][0].split(":")[1]
    blob.write_bytes(gzip.compress(tar_bytes([("a", "f", "tampered")])))
    with pytest.raises(ImageStoreError, match="digest mismatch"):
        load(store, str(tmp / "oci"))
    assert store.list() == []


@root_only
def test_prune_removes_layers_no_image_uses(store, tmp):
    d1, _ = commit(store, tmp, tar_bytes([("a", "f", "1")]))
    d2, _ = commit(store, tmp, tar_bytes([("b", "f", "2")]))
    store.add_image("keep", "1", layers=[d1], config=None, digest=None, source="t")
    removed, freed = store.prune()
    assert removed == [d2] and freed == 1
    assert os.listdir(store.layers_dir) == [d1.split(":")[1]]
    img, gone = store.remove("keep:1")
    assert gone == [d1]


def test_image_config_under_the_compose_keys():
    from supervisor.config.model import Service

    cfg = {"Entrypoint": ["/ep"], "Cmd": ["a", "b"], "Env": ["PATH=/bin", "X=img"], "WorkingDir": "/w",
           "User": "app", "ExposedPorts": {"80/tcp": {}}, "StopSignal": "SIGQUIT",
           "Healthcheck": {"Test": ["CMD", "true"], "Interval": 2_000_000_000, "Retries": 4}}
    s = with_image_config(Service(name="s", image="x"), cfg)
    assert (s.entrypoint, s.command, s.working_dir, s.user) == (("/ep",), ("a", "b"), "/w", "app")
    assert dict(s.environment) == {"PATH": "/bin", "X": "img"} and s.expose == ("80/tcp",) and s.stop_signal == 3
    s = with_image_config(Service(name="s", image="x", command=("c",), environment={"X": "svc"}, user="0",
                                  working_dir="/", stop_signal=9), cfg)
    assert (s.entrypoint, s.command, s.user, s.working_dir, s.stop_signal) == (("/ep",), ("c",), "0", "/", 9)
    assert dict(s.environment) == {"PATH": "/bin", "X": "svc"}
    s = with_image_config(Service(name="s", image="x", entrypoint=("/other",)), cfg)
    assert (s.entrypoint, s.command) == (("/other",), None)  # entrypoint: drops the image's Cmd, like compose
    hc = image_healthcheck(cfg)
    assert hc.test == ("CMD", "true") and hc.interval == 2.0 and hc.retries == 4
    assert image_healthcheck({"Healthcheck": {"Test": ["NONE"]}}).disabled
    assert image_healthcheck({}) is None
    assert parse_signal("TERM") == 15 and parse_signal("9") == 9 and parse_signal("nope") is None
    # moby's names, realtime included (systemd images: STOPSIGNAL SIGRTMIN+3); no such signal: unset
    assert parse_signal("SIGRTMIN+3") == signal.SIGRTMIN + 3 and parse_signal("999") is None


def test_healthcheck_merged_with_the_images_like_the_engine():
    from supervisor.config.model import Healthcheck as H

    image = image_healthcheck({"Healthcheck": {"Test": ["CMD", "img"], "Interval": 2_000_000_000,
                                               "Timeout": 0, "StartPeriod": 7_000_000_000, "Retries": 4}})
    assert image == H(test=("CMD", "img"), interval=2.0, start_period=7.0, retries=4)
    assert merge_healthcheck(None, image) == image  # no `healthcheck:` key: the image's
    assert merge_healthcheck(None, None) is None and merge_healthcheck(H(test=("CMD", "x")), None) == H(test=("CMD", "x"))
    # an empty test and each unset (or zero) timing or retries take the image's; the rest wins
    assert merge_healthcheck(H(interval=5.0, retries=0), image) == H(test=("CMD", "img"), interval=5.0,
                                                                     start_period=7.0, retries=4)
    assert merge_healthcheck(H(test=("CMD-SHELL", "mine")), image) == H(test=("CMD-SHELL", "mine"), interval=2.0,
                                                                         start_period=7.0, retries=4)
    off = merge_healthcheck(H(test=("NONE",)), image)  # `disable: true` turns the image's off
    assert off.disabled and off.test == ("NONE",)
    assert image_healthcheck({"Healthcheck": {"Test": ["NONE"]}}).disabled  # HEALTHCHECK NONE in the image
    # a malformed one (from a loaded archive or a registry) is ignored, not a crash of every reload
    assert image_healthcheck({"Healthcheck": "curl x"}) is None
    assert image_healthcheck({"Healthcheck": {"Test": "curl x"}}) is None
    assert image_healthcheck({"Healthcheck": {"Test": ["CMD", "x"], "Interval": "5s", "Retries": "two",
                                              "Timeout": True}}) == H(test=("CMD", "x"))
    # unset timings are Docker's defaults where the check runs
    assert H(test=("CMD", "x"), retries=0).with_defaults() == H(test=("CMD", "x"), interval=30.0, timeout=30.0,
                                                                 retries=3, start_period=0.0, start_interval=5.0)


def test_effective_stack_takes_the_images_healthcheck_and_stop_signal():
    from supervisor.config.model import Healthcheck as H, Service, ServiceExtras, Stack

    cfg = {"StopSignal": "SIGUSR1", "Healthcheck": {"Test": ["CMD", "img"], "Retries": 2}}

    class Images:
        def get(self, ref):
            if ref != "x":
                raise KeyError(ref)
            return type("I", (), {"config": cfg})

    services = {"plain": Service(name="plain", image="x"),
                "mine": Service(name="mine", image="x", stop_signal=2, healthcheck=H(test=("NONE",))),
                "timing": Service(name="timing", image="x", healthcheck=H(interval=1.0)),
                "rootfs": Service(name="rootfs", image="x", x=ServiceExtras(rootfs="/r")),
                "missing": Service(name="missing", image="y")}
    stack = effective_stack(Stack(name="p", project_dir="/", files=(), services=services), Images())
    s = stack.services
    assert (s["plain"].stop_signal, s["plain"].healthcheck) == (10, H(test=("CMD", "img"), retries=2))
    assert (s["mine"].stop_signal, s["mine"].healthcheck) == (2, H(test=("NONE",)))
    assert s["timing"].healthcheck == H(test=("CMD", "img"), interval=1.0, retries=2)
    assert s["rootfs"] == services["rootfs"] and s["missing"] == services["missing"]
    assert effective_stack(stack, Images()) == stack  # applying it twice changes nothing


def test_pull_policies(store, monkeypatch):
    assert policy_max_age("daily") == 86400 and policy_max_age("weekly") == 604800
    assert policy_max_age("every_1h30m") == 5400 and policy_max_age("every_2d") == 172800
    assert policy_max_age("missing") is None
    assert should_pull("always", store, "x") and should_pull(None, store, "x") and should_pull("daily", store, "x")
    assert not should_pull("never", store, "x") and not should_pull("build", store, "x")
    from supervisor.images.store import Image

    img = Image("x", "latest", "sha256:" + "0" * 64, (), 0, 1000.0, "t")
    monkeypatch.setattr(store, "find", lambda ref: img)
    assert not should_pull("missing", store, "x") and should_pull("always", store, "x")
    assert should_pull("every_10s", store, "x", now=1010.0) and not should_pull("every_10s", store, "x", now=1005.0)
    assert not should_pull("daily", store, "x", now=2000.0)
    with pytest.raises(Exception, match="unknown"):
        should_pull("sometimes", store, "x")
