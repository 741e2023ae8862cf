"""The local image store: imports from directories and tarballs, content addressing, atomicity,
hostile archives, `pysup image` as a real process. Everything lives in tmp directories named
`pysup-test-...` that are removed afterwards."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from supervisor.images.store import ImageNotFound, ImageStoreError, parse_ref

REPO = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not IS_ROOT, reason="needs root (owners, device nodes)")


def make_tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(root / "bin" / "tool", 0o4755)
    os.link(root / "bin" / "tool", root / "bin" / "tool2")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    os.symlink("/bin/tool", root / "bin" / "abs-link")
    os.symlink("../etc/passwd", root / "bin" / "rel-link")
    os.mkfifo(root / "fifo")
    if IS_ROOT:
        os.chown(root / "etc" / "passwd", 1000, 1000)
        os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return root


def assert_same_content(a: Path, b: Path) -> None:
    for base, dirs, files in os.walk(a):
        for n in dirs + files:
            pa = Path(base) / n
            pb = b / pa.relative_to(a)
            sa = os.lstat(pa)
            if stat.S_ISCHR(sa.st_mode):
                assert not os.path.lexists(pb), f"device node {pb} imported"
                continue
            sb = os.lstat(pb)
            assert stat.S_IFMT(sa.st_mode) == stat.S_IFMT(sb.st_mode), pa
            if not stat.S_ISLNK(sa.st_mode):
                assert stat.S_IMODE(sa.st_mode) == stat.S_IMODE(sb.st_mode), pa
            assert (sa.st_uid, sa.st_gid) == (sb.st_uid, sb.st_gid), pa
            if stat.S_ISLNK(sa.st_mode):
                assert os.readlink(pa) == os.readlink(pb)
            elif stat.S_ISREG(sa.st_mode):
                assert pa.read_bytes() == pb.read_bytes()


def test_refs_parse_like_docker():
    assert parse_ref("busybox") == ("busybox", "latest")
    assert parse_ref("busybox:1.36") == ("busybox", "1.36")
    assert parse_ref("localhost:5000/team/app:v2") == ("localhost:5000/team/app", "v2")
    assert parse_ref("registry.example.com/app") == ("registry.example.com/app", "latest")
    for bad in ("", "Upper", "a//b", "a:", "a:-x", "a@sha256:00", "-a", "a_:x"):
        with pytest.raises(ImageStoreError):
            parse_ref(bad)


def test_import_a_directory_keeps_the_tree(store, tmp):
    src = make_tree(tmp / "src")
    image = store.import_path("demo:1", str(src))
    assert (image.name, image.tag, len(image.layers)) == ("demo", "1", 1)
    (layer,) = store.layers("demo:1")
    assert layer == os.path.join(store.root, "layers", image.layers[0].removeprefix("sha256:"))
    assert_same_content(src, Path(layer))
    t1, t2 = os.stat(Path(layer) / "bin/tool"), os.stat(Path(layer) / "bin/tool2")
    assert (t1.st_ino, t1.st_nlink) == (t2.st_ino, 2), "hard link not kept"
    assert stat.S_ISFIFO(os.lstat(Path(layer) / "fifo").st_mode)
    assert os.listdir(store.tmp_dir) == []
    assert [i.ref for i in store.list()] == ["demo:1"]


def test_same_content_same_layer_and_shared(store, tmp):
    src = make_tree(tmp / "src")
    a = store.import_path("a", str(src))
    b = store.import_path("b:x", str(src))
    assert a.layers == b.layers and a.id == b.id
    assert len(os.listdir(os.path.join(store.root, "layers"))) == 1
    (src / "etc" / "passwd").write_text("changed\n")
    c = store.import_path("c", str(src))
    assert c.layers != a.layers
    # rm keeps a layer another image uses, removes the ones nobody uses
    _, removed = store.remove("a")
    assert removed == []
    _, removed = store.remove("b:x")
    assert removed == list(a.layers)
    assert os.listdir(os.path.join(store.root, "layers")) == [c.layers[0].removeprefix("sha256:")]
    with pytest.raises(ImageNotFound, match="a:latest"):
        store.get("a")


def test_import_replaces_a_tag(store, tmp):
    src = make_tree(tmp / "src")
    store.import_path("app", str(src))
    (src / "new").write_text("x")
    second = store.import_path("app", str(src))
    assert store.get("app").id == second.id
    assert len(store.list()) == 1


def tarball(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as t:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(info)
    return path


def info(name: str, kind: bytes = tarfile.REGTYPE, **kw) -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type = kind
    i.mode = kw.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
    for k, v in kw.items():
        setattr(i, k, v)
    return i


@pytest.mark.parametrize("suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tar.xz", "w:xz")])
def test_import_a_tarball(store, tmp, suffix, mode):
    src = make_tree(tmp / "src")
    path = tmp / f"rootfs{suffix}"
    with tarfile.open(path, mode) as t:
        t.add(src, arcname=".")
    image = store.import_path("tb", str(path))
    import hashlib

    assert image.layers == ("sha256:" + hashlib.sha256(path.read_bytes()).hexdigest(),)
    (layer,) = store.layers("tb")
    assert_same_content(src, Path(layer))
    assert os.stat(Path(layer) / "bin/tool").st_mode & stat.S_ISUID, "setuid bit lost"
    assert os.stat(Path(layer) / "bin/tool").st_ino == os.stat(Path(layer) / "bin/tool2").st_ino


@pytest.mark.skipif(shutil.which("zstd") is None, reason="needs zstd")
def test_import_a_zstd_tarball(store, tmp):
    src = make_tree(tmp / "src")
    plain = tmp / "rootfs.tar"
    with tarfile.open(plain, "w") as t:
        t.add(src, arcname=".")
    subprocess.run(["zstd", "-q", str(plain), "-o", str(tmp / "rootfs.tar.zst")], check=True)
    store.import_path("z", str(tmp / "rootfs.tar.zst"))
    assert_same_content(src, Path(store.layers("z")[0]))


@pytest.mark.parametrize("members,message", [
    ([(info("/etc/passwd"), b"x")], "absolute"),
    ([(info("../evil"), b"x")], "escapes"),
    ([(info("a/../../evil"), b"x")], "escapes"),
    ([(info("link", tarfile.LNKTYPE, linkname="../../etc/passwd"), None)], "escapes"),
])
def test_hostile_tarballs_are_refused_and_leave_nothing(store, tmp, members, message):
    path = tarball(tmp / "bad.tar", members)
    with pytest.raises(ImageStoreError, match=message):
        store.import_path("bad", str(path))
    assert store.list() == []
    assert not os.path.exists(store.layers_dir) or os.listdir(store.layers_dir) == []
    assert os.listdir(store.tmp_dir) == []
    assert not (tmp / "evil").exists()


def test_a_symlink_in_the_archive_never_leads_a_member_outside(store, tmp):
    outside = tmp / "outside"
    outside.mkdir()
    path = tarball(tmp / "sneaky.tar", [
        (info("escape", tarfile.SYMTYPE, linkname=str(outside)), None),
        (info("escape/owned"), b"pwned"),
        (info("rel", tarfile.SYMTYPE, linkname="../../../../../../" + str(outside)), None),
        (info("rel/owned2"), b"pwned"),
        (info("over", tarfile.SYMTYPE, linkname=str(outside / "target")), None),
        (info("over"), b"replaced, not written through"),
    ])
    (outside / "target").write_text("safe")
    store.import_path("sneaky", str(path))
    assert sorted(os.listdir(outside)) == ["target"] and (outside / "target").read_text() == "safe"
    (layer,) = store.layers("sneaky")
    # resolved inside the layer, as the container will see it
    assert (Path(layer) / str(outside).lstrip("/") / "owned").read_bytes() == b"pwned"
    assert (Path(layer) / "over").read_bytes() == b"replaced, not written through"


@root_only
def test_device_nodes_are_skipped(store, tmp):
    path = tarball(tmp / "dev.tar", [
        (info("dev", tarfile.DIRTYPE), None),
        (info("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0), None),
        (info("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3), None),
        (info("ok"), b"fine"),
    ])
    store.import_path("dev", str(path))
    (layer,) = store.layers("dev")
    assert os.listdir(Path(layer) / "dev") == [] and (Path(layer) / "ok").read_bytes() == b"fine"


def test_a_failed_import_leaves_nothing(store, tmp):
    (tmp / "junk.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ImageStoreError, match="junk.tar.gz"):
        store.import_path("junk", str(tmp / "junk.tar.gz"))
    with pytest.raises(ImageStoreError, match="nope"):
        store.import_path("junk", str(tmp / "nope"))
    with pytest.raises(ImageStoreError, match="reserved"):
        store.import_path("host", str(tmp))
    assert store.list() == []
    assert os.listdir(store.tmp_dir) == []


def test_an_interrupted_import_is_swept(store, tmp):
    src = make_tree(tmp / "src")
    os.makedirs(store.tmp_dir)
    dead = os.path.join(store.tmp_dir, "999999999-deadbeef")
    os.mkdir(dead)
    store.import_path("ok", str(src))
    assert os.listdir(store.tmp_dir) == []


def test_the_index_is_written_atomically(store, tmp, monkeypatch):
    src = make_tree(tmp / "src")
    store.import_path("first", str(src))
    before = Path(store.index_path).read_text()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    (src / "more").write_text("x")
    with pytest.raises(ImageStoreError, match="No space"):
        store.import_path("second", str(src))
    monkeypatch.undo()
    assert Path(store.index_path).read_text() == before
    assert [f for f in os.listdir(store.root) if f.endswith(".tmp")] == []
    assert [i.ref for i in store.list()] == ["first:latest"]


def test_readers_parse_the_index_once_until_it_changes(tmp, monkeypatch):
    """A stack of many image services looks each one up: one parse of index.json while it is
    unchanged (issue 9: it was parsed per service on the event loop), and any write, by this
    store or another process's, is seen at the next look-up."""
    from supervisor.config.model import Service, Stack
    from supervisor.images import store as store_mod
    from supervisor.images.config import effective_stack

    a, b = store_mod.ImageStore(str(tmp / "s")), store_mod.ImageStore(str(tmp / "s"))
    for i in range(20):
        b.add_image(f"pysup-test-{i}", "1", layers=[], config={"StopSignal": "SIGQUIT"}, digest=None, source="t")
    loads = []
    real = json.load
    monkeypatch.setattr(store_mod.json, "load", lambda f: loads.append(1) or real(f))
    stack = Stack(name="p", project_dir="/", files=(), services={
        f"s{i}": Service(name=f"s{i}", image=f"pysup-test-{i}:1") for i in range(20)})
    assert all(s.stop_signal == 3 for s in effective_stack(stack, a).services.values())
    assert a.find("pysup-test-0:1") is not None and len(a.list()) == 20
    assert len(loads) == 1
    b.remove("pysup-test-0:1")  # another store object: as another process would
    n = len(loads)
    assert a.find("pysup-test-0:1") is None and a.find("pysup-test-1:1") is not None
    assert len(loads) == n + 1
    b.add_image("pysup-test-0", "1", layers=[], config=None, digest=None, source="t")
    n = len(loads)
    assert a.get("pysup-test-0:1").config is None
    assert len(loads) == n + 1


def pysup(env: dict, *args: str):
    return subprocess.run([sys.executable, "-m", "supervisor", *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), **env}, cwd=str(REPO))


def test_image_commands_as_a_real_process(tmp):
    src = make_tree(tmp / "src")
    env = {"PYSUP_STATE_DIR": str(tmp / "state")}
    r = pysup(env, "image", "import", "pysup-test-img:v1", str(src))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("pysup-test-img:v1 sha256:")
    assert os.path.isdir(tmp / "state" / "images" / "layers")
    r = pysup(env, "image", "ls")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TAG", "IMAGE", "ID", "SIZE", "CREATED"]
    assert lines[1].split()[:2] == ["pysup-test-img", "v1"]
    r = pysup(env, "image", "ls", "--format", "json")
    assert [i["name"] for i in json.loads(r.stdout)] == ["pysup-test-img"]
    r = pysup(env, "image", "rm", "pysup-test-img:nope")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "pysup-test-img:nope" in r.stderr
    r = pysup(env, "image", "rm", "pysup-test-img:v1")
    assert (r.returncode, r.stdout) == (0, "removed pysup-test-img:v1\n")
    assert pysup(env, "image", "ls", "-q").stdout == ""
    assert os.listdir(tmp / "state" / "images" / "layers") == []


CAP_NET_RAW_FILE_CAP = (0x02000001).to_bytes(4, "little") + (1 << 13).to_bytes(4, "little") + bytes(12)


@root_only
def test_extended_attributes_and_file_capabilities_are_kept(store, tmp):
    src = tmp / "src"
    src.mkdir()
    (src / "ping").write_bytes(b"\x7fELF pretend")
    os.chmod(src / "ping", 0o755)
    try:
        os.setxattr(src / "ping", "user.pysup", b"yes")
        os.setxattr(src / "ping", "security.capability", CAP_NET_RAW_FILE_CAP)
    except OSError as e:
        pytest.skip(f"no xattrs here: {e}")
    store.import_path("caps", str(src))
    (layer,) = store.layers("caps")
    assert os.getxattr(Path(layer) / "ping", "user.pysup") == b"yes"
    assert os.getxattr(Path(layer) / "ping", "security.capability") == CAP_NET_RAW_FILE_CAP
    # the same through a PAX tarball (`tar --xattrs` format)
    info_ = tarfile.TarInfo("ping")
    data = b"\x7fELF pretend"
    info_.size, info_.mode = len(data), 0o755
    info_.pax_headers = {"SCHILY.xattr.user.pysup": "yes",
                         "SCHILY.xattr.security.capability": CAP_NET_RAW_FILE_CAP.decode("utf-8", "surrogateescape")}
    path = tmp / "caps.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        t.addfile(info_, io.BytesIO(data))
    store.import_path("caps-tar", str(path))
    (layer,) = store.layers("caps-tar")
    assert os.getxattr(Path(layer) / "ping", "user.pysup") == b"yes"
    assert os.getxattr(Path(layer) / "ping", "security.capability") == CAP_NET_RAW_FILE_CAP


@root_only
def test_rm_refuses_an_image_a_running_container_uses(store, tmp):
    src = make_tree(tmp / "src")
    store.import_path("busy", str(src))
    (layer,) = store.layers("busy")
    # a process whose mount namespace has the layer mounted, as a running container's does
    p = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                          f"mount --bind {layer} {layer} && echo ready && exec sleep 30"], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "ready\n"
        with pytest.raises(ImageStoreError, match="in use by a running container"):
            store.remove("busy")
        assert [i.ref for i in store.list()] == ["busy:latest"]
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
    store.remove("busy")
    assert store.list() == []
