"""Pulls from a real registry on loopback (Debian's docker-registry, images pushed with skopeo from
OCI layouts built here): by tag and digest, basic auth from a Docker config.json, mirrors, digest
mismatch and truncated layers refused with nothing left, one layer fetched once by concurrent
pulls, errors naming the image; a pulled busybox runs with its config (`pysup run`, `pysup up`)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import trio

from ocitools import free_port, make_oci_layout, tar_bytes
from supervisor.images.registry import (RegistryClient, RegistryError, RegistrySettings, load_credentials,
                                        load_settings, parse_challenge)
from supervisor.images.store import ImageStore

REPO = Path(__file__).resolve().parents[2]


def repo_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def small_layout(tmp: Path, name: str, files: dict[str, str], *, base: bytes | None = None, tag: str = "1") -> dict:
    layers = ([base] if base else []) + [tar_bytes([(k, "f", v) for k, v in files.items()])]
    return make_oci_layout(tmp / name, layers, tag=tag, config={"Cmd": ["/bin/true"]})


def clean(store: ImageStore) -> bool:
    tmpd = Path(store.tmp_dir)
    return store.list() == [] and (not tmpd.exists() or not list(tmpd.iterdir())) and (
        not Path(store.layers_dir).exists() or not list(Path(store.layers_dir).iterdir()))


async def pull(ref: str, store: ImageStore, **kw):
    async with RegistryClient(kw.pop("settings", None), credentials=kw.pop("credentials", {}), **kw) as c:
        return await c.pull(ref, store)


def blob_file(registry, digest: str) -> Path:
    hexd = digest.split(":")[1]
    return registry.root / "data/docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


# --- units -------------------------------------------------------------------------------------


def test_challenges_and_credentials(tmp):
    assert parse_challenge('Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull"') == (
        "bearer", {"realm": "https://auth.example/token", "service": "reg", "scope": "repository:a:pull"})
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})
    cfg = tmp / "config.json"
    cfg.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
        "reg.example:5000": {"username": "u", "password": "p:w"}}}))
    assert load_credentials(str(cfg)) == {"docker.io": ("hub", "pw"), "reg.example:5000": ("u", "p:w")}


def test_settings_from_a_file_and_the_stack(tmp):
    f = tmp / "registries.yaml"
    f.write_text("docker.io:\n  mirrors: [mirror.one:5000]\nreg.internal:5000:\n  insecure: true\n")
    from supervisor.config.model import Registry

    s = load_settings({"docker.io": Registry(mirrors=("mirror.two",))}, path=str(f))
    assert s.endpoints("docker.io") == [("mirror.two", True), ("registry-1.docker.io", False)]
    assert s.is_insecure("reg.internal:5000") and s.is_insecure("127.0.0.1:5000") and s.is_insecure("localhost")
    assert not s.is_insecure("ghcr.io")


# --- a real registry ---------------------------------------------------------------------------


async def test_pull_by_tag_and_by_digest(registry, store, tmp):
    name = repo_name()
    base = tar_bytes([("bin", "d", None), ("bin/base", "f", "b")])
    info = small_layout(tmp, "l", {"top": "t"}, base=base)
    registry.push(tmp / "l", name, "1")
    img = await pull(f"{registry.host}/{name}:1", store)
    assert img.ref == f"{registry.host}/{name}:1" and img.digest == info["manifest_digest"]
    assert img.layers == tuple(reversed(info["layers"])) and img.config == {"Cmd": ["/bin/true"]}
    assert (Path(store.layer_path(img.layers[0])) / "top").read_text() == "t"
    assert (Path(store.layer_path(img.layers[1])) / "bin/base").read_text() == "b"
    by_digest = await pull(f"{registry.host}/{name}@{info['manifest_digest']}", store)
    assert by_digest.ref == f"{registry.host}/{name}@{info['manifest_digest']}" and by_digest.layers == img.layers
    assert store.get(f"{registry.host}/{name}@{info['manifest_digest']}").layers == img.layers
    assert len(os.listdir(store.layers_dir)) == 2  # shared, stored once
    removed, layers = store.remove(f"{registry.host}/{name}@{info['manifest_digest']}")
    assert removed.tag == "<none>" and layers == []  # the tagged image still uses them
    assert [i.ref for i in store.list()] == [img.ref]


async def test_an_image_index_resolves_to_this_hosts_platform(registry, store, tmp):
    name = repo_name()
    small_layout(tmp, "amd", {"arch": "amd64"})
    make_oci_layout(tmp / "arm", [tar_bytes([("arch", "f", "arm64")])], tag="1", arch="arm64")
    # one layout with an index of both
    idx = tmp / "multi"
    shutil.copytree(tmp / "amd", idx)
    shutil.copytree(tmp / "arm" / "blobs", idx / "blobs", dirs_exist_ok=True)
    entries = [json.loads((tmp / d / "index.json").read_text())["manifests"][0] for d in ("amd", "arm")]
    for e in entries:
        e.pop("annotations")
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": entries}).encode()
    import hashlib

    hexd = hashlib.sha256(index).hexdigest()
    (idx / "blobs/sha256" / hexd).write_bytes(index)
    (idx / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": f"sha256:{hexd}", "size": len(index),
        "annotations": {"org.opencontainers.image.ref.name": "1"}}]}))
    subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--all", "--preserve-digests", "--dest-tls-verify=false",
                    f"oci:{idx}:1", f"docker://{registry.host}/{name}:1"], check=True, capture_output=True)
    async with RegistryClient(credentials={}, platform=("linux", "arm64", "v8")) as c:
        img = await c.pull(f"{registry.host}/{name}:1", store)
    assert (Path(store.layer_path(img.layers[0])) / "arch").read_text() == "arm64"
    assert img.digest == f"sha256:{hexd}"  # the digest pulled: the index's, like Docker's RepoDigests
    async with RegistryClient(credentials={}, platform=("linux", "amd64", None)) as c:
        img = await c.pull(f"{registry.host}/{name}:1", store)
    assert (Path(store.layer_path(img.layers[0])) / "arch").read_text() == "amd64"
    with pytest.raises(RegistryError, match=r"no manifest for this platform \(linux/s390x\)"):
        async with RegistryClient(credentials={}, platform=("linux", "s390x", None)) as c:
            await c.pull(f"{registry.host}/{name}:1", store)


async def test_errors_name_the_image_and_leave_nothing(registry, store, tmp):
    with pytest.raises(RegistryError) as e:
        await pull(f"{registry.host}/nosuch/image:1", store)
    assert str(e.value) == f"image {registry.host}/nosuch/image:1: not found in registry {registry.host} (manifest unknown)"
    dead = f"127.0.0.1:{free_port()}"
    with pytest.raises(RegistryError) as e:
        await pull(f"{dead}/x:1", store, retries=0)
    assert str(e.value) == f"image {dead}/x:1: registry {dead} unreachable (connection refused)"
    assert clean(store)


async def test_a_layer_whose_digest_does_not_match_is_refused(registry, store, tmp):
    name = repo_name()
    info = small_layout(tmp, "l", {"f": "x" * 1000})
    registry.push(tmp / "l", name, "1")
    data = blob_file(registry, info["layers"][0])
    raw = bytearray(data.read_bytes())
    raw[-9] ^= 0xFF  # same size, other bytes
    data.write_bytes(bytes(raw))
    with pytest.raises(RegistryError) as e:
        await pull(f"{registry.host}/{name}:1", store)
    msg = str(e.value)
    assert msg.startswith(f"image {registry.host}/{name}:1: layer {info['layers'][0][:19]}: digest mismatch"), msg
    assert clean(store)


async def test_a_truncated_layer_is_refused(registry, store, tmp):
    name = repo_name()
    info = small_layout(tmp, "l", {"f": os.urandom(50_000).hex()})
    registry.push(tmp / "l", name, "1")
    data = blob_file(registry, info["layers"][0])
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(RegistryError) as e:
        await pull(f"{registry.host}/{name}:1", store, retries=1)
    assert f"layer {info['layers'][0][:19]}: truncated (1000 of" in str(e.value), str(e.value)
    assert clean(store)


async def test_concurrent_pulls_fetch_a_shared_layer_once(registry, store, tmp, monkeypatch):
    base = tar_bytes([("big", "f", os.urandom(300_000).hex())])
    names = [repo_name(), repo_name()]
    infos = [small_layout(tmp, n, {"which": n}, base=base) for n in names]
    for n in names:
        registry.push(tmp / n, n, "1")
    fetched: list[str] = []
    real = RegistryClient._download

    async def counting(self, endpoint, ref, desc, dest):
        fetched.append(desc["digest"])
        await real(self, endpoint, ref, desc, dest)

    monkeypatch.setattr(RegistryClient, "_download", counting)
    async with trio.open_nursery() as n:
        for name in names + names:  # two pulls of each image, all at once
            n.start_soon(pull, f"{registry.host}/{name}:1", store)
    shared = infos[0]["layers"][0]
    assert shared == infos[1]["layers"][0]
    assert fetched.count(shared) == 1 and len(fetched) == 3, fetched
    assert sorted(i.ref for i in store.list()) == sorted(f"{registry.host}/{n}:1" for n in names)


async def test_basic_auth_from_a_docker_config_json(auth_registry, store, tmp):
    name = repo_name()
    small_layout(tmp, "l", {"secret": "s"})
    auth_registry.push(tmp / "l", name, "1")
    ref = f"{auth_registry.host}/{name}:1"
    with pytest.raises(RegistryError, match="authentication required and no credentials"):
        await pull(ref, store)
    with pytest.raises(RegistryError, match="access denied"):
        await pull(ref, store, credentials={auth_registry.host: ("pysup", "wrong")})
    cfg = tmp / "config.json"
    cfg.write_text(json.dumps({"auths": {auth_registry.host: {"auth": base64.b64encode(b"pysup:s3cret-pw").decode()}}}))
    img = await pull(ref, store, credentials=load_credentials(str(cfg)))
    assert (Path(store.layer_path(img.layers[0])) / "secret").read_text() == "s"


async def test_mirrors_are_tried_first_and_a_dead_one_skipped(registry, store, tmp):
    name = repo_name()
    small_layout(tmp, "l", {"m": "mirrored"})
    registry.push(tmp / "l", f"library/{name}", "1")  # as docker.io's official image `name` would be
    dead = f"127.0.0.1:{free_port()}"
    settings = RegistrySettings({"docker.io": (dead, registry.host)})
    img = await pull(f"{name}:1", store, settings=settings, retries=0)
    assert img.ref == f"{name}:1" and img.source == f"docker.io/library/{name}:1"


# --- running what was pulled -------------------------------------------------------------------


def pysup(env, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "supervisor", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(REPO))


@pytest.fixture
def env(tmp):
    e = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "PYSUP_STATE_DIR": str(tmp / "state"),
         "PYSUP_RUNTIME_DIR": str(tmp / "run"), "HOME": str(tmp), "PYSUP_REGISTRIES": str(tmp / "none.yaml")}
    yield e
    containers = tmp / "run" / "containers"
    assert not containers.exists() or os.listdir(containers) == []


def test_a_pulled_busybox_runs_with_its_config(registry, busybox_layout, env, tmp):
    layout, info = busybox_layout
    name = repo_name()
    registry.push(layout, name, "1")
    ref = f"{registry.host}/{name}:1"
    # `pysup up` pulls a missing image (pull_policy missing, the default) and runs it with its config:
    # Entrypoint, Cmd, Env, WorkingDir; a second service overrides Cmd, Env and the working directory
    (tmp / "a.yaml").write_text(f"name: pulled\nservices:\n  a:\n    image: {ref}\n")
    (tmp / "b.yaml").write_text(
        f"name: pulled\nservices:\n  b:\n    image: {ref}\n    command: ['echo b $$GREETING in $$(pwd)']\n"
        f"    environment: {{GREETING: bye}}\n    working_dir: /etc\n    pull_policy: never\n")
    for f, want in (("a.yaml", "image-cmd hello from /tmp\n"), ("b.yaml", "b bye in /etc\n")):
        r = pysup(env, "-f", str(tmp / f), "up", "--abort-on-container-exit", "--no-log-prefix")
        assert (r.returncode, r.stdout) == (0, want), r.stderr
    r = pysup(env, "-f", str(tmp / "a.yaml"), "pull", "-q")
    assert (r.returncode, r.stdout) == (0, ""), r.stderr  # present already: nothing to pull
    r = pysup(env, "pull", "-q", ref)
    assert (r.returncode, r.stdout) == (0, f"{ref} {info['manifest_digest']}\n"), r.stderr
    # `pysup run` as `docker run`: the image's Entrypoint (/bin/sh -c) before the command given
    r = pysup(env, "run", "--rm", ref, "--", "ls /bin/busybox; echo ok > /x; cat /x; echo $GREETING; pwd")
    assert (r.returncode, r.stdout) == (0, "/bin/busybox\nok\nhello\n/tmp\n"), r.stderr
    r = pysup(env, "run", "--rm", "-e", "GREETING=hey", "-w", "/etc", ref)
    assert (r.returncode, r.stdout) == (0, "image-cmd hey from /etc\n"), r.stderr
    # image ls shows it with its size; rm and prune free the layers
    r = pysup(env, "image", "ls")
    assert ref.rsplit(":", 1)[0] in r.stdout and "MB" in r.stdout
    assert pysup(env, "image", "rm", ref).returncode == 0
    r = pysup(env, "image", "prune")
    assert r.returncode == 0 and r.stdout.startswith("removed "), r.stdout
    assert os.listdir(Path(env["PYSUP_STATE_DIR"]) / "images" / "layers") == []


async def test_a_full_disk_is_one_line_and_leaves_nothing(registry, busybox_layout, tmp):
    layout, _ = busybox_layout
    name = repo_name()
    registry.push(layout, name, "1")
    small = tmp / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "pysup-test-full", str(small)], check=True)
    try:
        store = ImageStore(str(small / "images"))
        with pytest.raises(RegistryError) as e:
            await pull(f"{registry.host}/{name}:1", store)
        msg = str(e.value)
        assert msg.startswith(f"image {registry.host}/{name}:1: ") and "no space left on device" in msg.lower(), msg
        assert "\n" not in msg and clean(store)
    finally:
        subprocess.run(["umount", "-l", str(small)], check=True)


def test_two_containers_of_one_image_share_its_layers(registry, busybox_layout, env, tmp):
    layout, _ = busybox_layout
    name = repo_name()
    registry.push(layout, name, "1")
    ref = f"{registry.host}/{name}:1"
    assert pysup(env, "pull", "-q", ref).returncode == 0
    store = ImageStore(str(Path(env["PYSUP_STATE_DIR"]) / "images"))
    [layer] = store.layers(ref)
    before = sorted(os.listdir(store.layers_dir))
    script = "grep ' / / ' /proc/self/mountinfo; sleep 0.3"
    procs = [subprocess.Popen([sys.executable, "-m", "supervisor", "run", "--rm", ref, "--", script],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))
             for _ in range(2)]
    outs = [p.communicate(timeout=30) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "overlay" in out and layer in out, out  # the root is an overlay over the store's layer itself
    assert sorted(os.listdir(store.layers_dir)) == before  # no copy made


async def test_bearer_token_auth_from_a_token_service(token_registry, store, tmp):
    name = repo_name()
    small_layout(tmp, "l", {"tok": "t"})
    token_registry.push(tmp / "l", f"team/{name}", "1")
    ref = f"{token_registry.host}/team/{name}:1"
    with pytest.raises(RegistryError, match="access denied by the token service"):
        await pull(ref, store)
    before = len(token_registry.tokens.requests)
    img = await pull(ref, store, credentials={token_registry.host: ("pysup", "t0ken-pw")})
    assert (Path(store.layer_path(img.layers[0])) / "tok").read_text() == "t"
    asked = token_registry.tokens.requests[before:]
    assert len(asked) == 1 and f"scope=repository%3Ateam%2F{name}%3Apull" in asked[0], asked


async def test_zstd_layers_and_docker_v2_manifests(registry, store, tmp):
    if shutil.which("zstd") is None:
        pytest.skip("needs zstd")
    name = repo_name()
    make_oci_layout(tmp / "z", [tar_bytes([("z", "f", "zstd layer")])], tag="1", compress="zstd")
    registry.push(tmp / "z", name, "zstd", src_tag="1")
    img = await pull(f"{registry.host}/{name}:zstd", store)
    assert (Path(store.layer_path(img.layers[0])) / "z").read_text() == "zstd layer"
    small_layout(tmp, "d", {"d": "docker v2"})
    r = subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--format", "v2s2", "--dest-tls-verify=false",
                        f"oci:{tmp / 'd'}:1", f"docker://{registry.host}/{name}:v2s2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    img = await pull(f"{registry.host}/{name}:v2s2", store)
    assert (Path(store.layer_path(img.layers[0])) / "d").read_text() == "docker v2" and img.config == {"Cmd": ["/bin/true"]}
