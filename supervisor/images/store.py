"""pysup's local image store: root filesystems imported from a directory or a tarball.

An image is a list of layers (directories, top first) that the runtime stacks with overlayfs; an
import makes one layer. Layers are content-addressed and shared between images:

    <images_dir>/                      paths.images_dir(): /var/lib/pysup/images by default
        index.json                     {"version": 1, "images": {"NAME:TAG": {...}}}: the only mutable file
        layers/<sha256 hex>/           one unpacked layer (the tree itself: it is a lowerdir)
        tmp/<pid>-<random>/            imports in progress (swept when their process is gone)
        lock                           flock(2): commits and removals are serialised

A layer's digest is the sha256 of the tarball it came from, or, for a directory, of a canonical
walk of the tree (paths, types, modes, owners, file contents, link targets, hard-link groups; not
times). `import_path` unpacks into `tmp/`, then, holding the lock, renames the tree to
`layers/<hex>` (or drops it when that layer exists already) and rewrites `index.json` atomically
(temporary file, fsync, rename): a failed or interrupted import leaves nothing in the store.
Removing an image removes the layers no other image uses (refused while a running container's
mount uses one, unless forced).

Registry pulls (`registry.py`) and archive loads (`archive.py`) add images of several layers with
`commit_layer` and `add_image`, keeping the manifest digest and the image config; `prune` removes
the layers no image uses.

Imports: the standard library only (`pysup run IMAGE` resolves through here and must start fast);
tarfile and subprocess only when a tarball is imported.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import posixpath
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from ..atomic import write_json
from ..errors import PysupError

try:  # the builtin module: hashlib (OpenSSL) costs a few ms at import
    from _sha256 import sha256 as _sha256
except ImportError:  # pragma: no cover
    from hashlib import sha256 as _sha256

HOST_IMAGE = "host"  # `image: host`: the host's own filesystem, never in the store
DEFAULT_TAG = "latest"
INDEX_VERSION = 1
NO_TAG = "<none>"  # an image pulled by digest only: its index key is NAME@sha256:<hex>
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20


class ImageStoreError(PysupError):
    """An image operation failed: one line saying which image or file and why."""


class ImageNotFound(ImageStoreError):
    pass


class Image(NamedTuple):
    name: str
    tag: str
    id: str  # "sha256:<hex>" of the image's layer list
    layers: tuple[str, ...]  # layer digests ("sha256:<hex>"), top first
    size: int  # bytes of file content in the layers (hard links counted once)
    created: float  # epoch seconds of the import
    source: str  # what was imported (absolute path) or pulled (canonical reference)
    digest: str | None = None  # the manifest's digest, for pulled and loaded images
    config: dict[str, Any] | None = None  # the image config's `config` object (Entrypoint, Cmd, Env, ...)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.digest}" if self.tag == NO_TAG else f"{self.name}:{self.tag}"

    def to_dict(self) -> dict[str, Any]:
        d = {"id": self.id, "layers": list(self.layers), "size": self.size, "created": self.created,
             "source": self.source}
        if self.digest:
            d["digest"] = self.digest
        if self.config is not None:
            d["config"] = self.config
        return d


# --- names -------------------------------------------------------------------------------------


def _valid_component(part: str) -> bool:
    # Docker's path component: [a-z0-9]+ separated by one '.', one or two '_', or any number of '-'.
    if not part or not part[0].isalnum() or not part[-1].isalnum():
        return False
    return all(c.isascii() and (c.islower() or c.isdigit() or c in "._-") for c in part)


def parse_ref(ref: str) -> tuple[str, str]:
    """`NAME[:TAG]` → (familiar name, tag); the tag defaults to `latest`. Names are Docker's
    (`supervisor.images.reference`): `docker.io/library/busybox` and `busybox` are one name."""
    name, tag, digest = parse_any(ref)
    if digest:
        raise ImageStoreError(f"image {ref!r}: digests (@sha256:...) are not supported here")
    return name, tag


def parse_any(ref: str) -> tuple[str, str, str | None]:
    """`NAME[:TAG][@DIGEST]` → (familiar name, tag or NO_TAG, digest or None)."""
    from .reference import ReferenceError, parse

    try:
        r = parse(ref)
    except ReferenceError as e:
        raise ImageStoreError(str(e)) from None
    return r.name, r.tag or NO_TAG, r.digest


# --- the store ---------------------------------------------------------------------------------


class ImageStore:
    """The images under `root` (paths.images_dir()). Every method is synchronous."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.layers_dir = os.path.join(self.root, "layers")
        self.tmp_dir = os.path.join(self.root, "tmp")
        self.index_path = os.path.join(self.root, "index.json")
        self._cached: tuple[tuple[int, int, int, int], dict[str, Any]] | None = None

    # -- reading --

    def _index(self) -> dict[str, Any]:
        """The index for reading (never modify it): parsed again only when index.json changed
        (its inode, size, mtime or ctime; every write replaces the file by rename), so a stack
        of many image services costs one parse, not one per service."""
        try:
            st = os.stat(self.index_path)
        except FileNotFoundError:
            return {"version": INDEX_VERSION, "images": {}}
        except OSError:
            return self._read_index()  # reports it
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self._read_index())  # stat first: a write in between only re-reads next time
        return self._cached[1]

    def _read_index(self) -> dict[str, Any]:
        """The index read now (writers modify and write it back)."""
        try:
            with open(self.index_path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {"version": INDEX_VERSION, "images": {}}
        except (OSError, ValueError) as e:
            raise ImageStoreError(f"image store {self.index_path}: unreadable ({e})") from None
        if not isinstance(data, dict) or data.get("version") != INDEX_VERSION or not isinstance(data.get("images"), dict):
            raise ImageStoreError(f"image store {self.index_path}: unknown format")
        return data

    @staticmethod
    def _image(ref: str, d: dict[str, Any]) -> Image:
        if "@" in ref:
            name, tag = ref.partition("@")[0], NO_TAG
        else:
            name, _, tag = ref.rpartition(":")
        return Image(name, tag, d["id"], tuple(d["layers"]), int(d.get("size", 0)), float(d.get("created", 0)),
                     d.get("source", ""), d.get("digest"), d.get("config"))

    def list(self) -> list[Image]:
        images = self._index()["images"]
        return sorted((self._image(ref, d) for ref, d in images.items()), key=lambda i: (i.name, i.tag))

    def find(self, ref: str) -> Image | None:
        """The image `NAME[:TAG]`, `NAME@DIGEST` (any tag of NAME with that manifest digest) or
        `NAME:TAG@DIGEST` (that tag, if its digest matches), or None."""
        name, tag, digest = parse_any(ref)
        images = self._index()["images"]
        if digest is None:
            d = images.get(f"{name}:{tag}")
            return None if d is None else self._image(f"{name}:{tag}", d)
        keys = [f"{name}:{tag}"] if tag != NO_TAG else [f"{name}@{digest}", *sorted(images)]
        for key in keys:
            d = images.get(key)
            if d is not None and d.get("digest") == digest and (key.partition("@")[0].rpartition(":")[0] == name
                                                               or key == f"{name}@{digest}"):
                return self._image(key, d)
        return None

    def get(self, ref: str) -> Image:
        image = self.find(ref)
        if image is None:
            name, tag, digest = parse_any(ref)
            shown = f"{name}@{digest}" if tag == NO_TAG else f"{name}:{tag}"
            raise ImageNotFound(f"image {shown} is not in the local store ({self.root}); "
                                f"pull it with `pysup pull {shown}` or add it with `pysup image import {shown} PATH`")
        return image

    def layer_path(self, digest: str) -> str:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or len(hexd) != 64 or not all(c in "0123456789abcdef" for c in hexd):
            raise ImageStoreError(f"invalid layer digest {digest!r}")
        return os.path.join(self.layers_dir, hexd)

    def layers(self, ref: str) -> list[str]:
        """The image's layer directories, top first (overlayfs lowerdir order)."""
        image = self.get(ref)
        out = [self.layer_path(d) for d in image.layers]
        for p in out:
            if not os.path.isdir(p):
                raise ImageStoreError(f"image {image.ref}: layer {p} is missing (store damaged; import it again)")
        return out

    # -- writing --

    def _lock(self) -> _Lock:
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        return _Lock(os.path.join(self.root, "lock"))

    def _write_index(self, data: dict[str, Any]) -> None:
        write_json(self.index_path, data, durable=True, indent=1, sort_keys=True)
        _fsync_dir(self.root)

    def _new_tmp(self) -> str:
        os.makedirs(self.tmp_dir, mode=0o700, exist_ok=True)
        self._sweep_tmp()
        d = os.path.join(self.tmp_dir, f"{os.getpid()}-{secrets.token_hex(6)}")
        os.mkdir(d, 0o700)
        return d

    def _sweep_tmp(self) -> None:
        """Imports whose process is gone (killed mid-way) leave their tmp dir: remove those."""
        try:
            entries = os.listdir(self.tmp_dir)
        except FileNotFoundError:
            return
        for entry in entries:
            pid = entry.partition("-")[0]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                shutil.rmtree(os.path.join(self.tmp_dir, entry), ignore_errors=True)

    def import_path(self, ref: str, path: str) -> Image:
        """Import a directory or a rootfs tarball (.tar, .tar.gz/.tgz, .tar.bz2, .tar.xz, .tar.zst
        with the zstd program) as the one-layer image `ref`, replacing an image of that name."""
        name, tag = parse_ref(ref)
        if name == HOST_IMAGE:
            raise ImageStoreError("image name 'host' is reserved (image: host is the host's own filesystem)")
        src = os.path.abspath(path)
        try:
            st = os.stat(src)
        except OSError as e:
            raise ImageStoreError(f"import {path}: {e.strerror}") from None
        if stat.S_ISDIR(st.st_mode) and _inside(self.root, os.path.realpath(src)):
            raise ImageStoreError(f"import {path}: contains or is inside the image store ({self.root})")
        os.makedirs(self.root, mode=0o711, exist_ok=True)  # traversable: a user namespace's root reads layers
        work = self._new_tmp()
        try:
            tree = os.path.join(work, "tree")
            if stat.S_ISDIR(st.st_mode):
                digest, size = copy_tree(src, tree)
            elif stat.S_ISREG(st.st_mode):
                digest, size = unpack_tarball(src, tree)
            else:
                raise ImageStoreError(f"import {path}: neither a directory nor a file")
            os.chmod(tree, 0o755)
            layer = f"sha256:{digest}"
            image_id = "sha256:" + _sha256(json.dumps([layer]).encode()).hexdigest()
            image = Image(name, tag, image_id, (layer,), size, time.time(), src)
            os.sync()  # the layer's files on disk before the index names them
            with self._lock():
                dest = self.layer_path(layer)
                os.makedirs(self.layers_dir, mode=0o700, exist_ok=True)
                os.chmod(self.layers_dir, 0o711)  # traversable: a user namespace's root reads its lowerdir
                if not os.path.isdir(dest):
                    os.rename(tree, dest)
                    _fsync_dir(self.layers_dir)
                data = self._read_index()
                data["images"][image.ref] = image.to_dict()
                self._write_index(data)
            return image
        except ImageStoreError:
            raise
        except OSError as e:
            raise ImageStoreError(f"import {path}: {e}") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # -- images of several layers (registry pulls, `pysup image load`) --

    def has_layer(self, digest: str) -> bool:
        return os.path.isdir(self.layer_path(digest))

    def layer_lock(self, digest: str) -> str:
        """The path of the flock(2) file that serialises fetching and unpacking one layer."""
        d = os.path.join(self.root, "locks")
        os.makedirs(d, mode=0o700, exist_ok=True)
        return os.path.join(d, self.layer_path(digest).rpartition("/")[2])

    def commit_layer(self, digest: str, blob: str, *, what: str) -> int:
        """Unpack the layer tarball `blob` (its digest already verified) as the layer `digest`:
        into `tmp/`, then renamed into `layers/` under the lock. OCI whiteouts become overlayfs
        ones. Returns the unpacked size. Nothing is left in the store on failure."""
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        work = self._new_tmp()
        try:
            tree = os.path.join(work, "tree")
            _, size = unpack_tarball(blob, tree, layer=True, digest=digest.partition(":")[2])
            os.chmod(tree, 0o755)
            os.sync()
            with self._lock():
                dest = self.layer_path(digest)
                os.makedirs(self.layers_dir, mode=0o700, exist_ok=True)
                os.chmod(self.layers_dir, 0o711)
                if not os.path.isdir(dest):
                    os.rename(tree, dest)
                    _fsync_dir(self.layers_dir)
                data = self._read_index()
                data.setdefault("layer_sizes", {})[digest] = size
                self._write_index(data)
            return size
        except ImageStoreError as e:
            raise ImageStoreError(f"{what}: layer {digest[:19]}: {str(e).removeprefix(f'import {blob}: ')}") from None
        except OSError as e:
            raise ImageStoreError(f"{what}: layer {digest[:19]}: {e.strerror or e}") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def add_image(self, name: str, tag: str, *, layers: list[str], config: dict[str, Any] | None,
                  digest: str | None, source: str) -> Image:
        """Record the image NAME:TAG (or NAME@DIGEST when `tag` is NO_TAG) made of `layers`
        (digests, base first, all committed), replacing an image of that name. A `config` whose
        Entrypoint, Cmd, Env, WorkingDir, User or ExposedPorts has the wrong type is refused."""
        if config is not None:  # refused as the engine refuses it, rather than failing each start
            from .config import ImageConfigError, checked_config

            try:
                checked_config(f"{name}@{digest}" if tag == NO_TAG else f"{name}:{tag}", config)
            except ImageConfigError as e:
                raise ImageStoreError(str(e)) from None
        top_first = tuple(reversed(layers))
        image_id = "sha256:" + _sha256(json.dumps(list(top_first)).encode()).hexdigest()
        with self._lock():
            data = self._read_index()
            for layer in top_first:
                if not os.path.isdir(self.layer_path(layer)):
                    raise ImageStoreError(f"image {name}:{tag}: layer {layer} is missing")
            sizes = data.get("layer_sizes", {})
            size = sum(int(sizes.get(layer, 0)) for layer in set(top_first))
            image = Image(name, tag, image_id, top_first, size, time.time(), source, digest, config)
            data["images"][image.ref] = image.to_dict()
            self._write_index(data)
        return image

    def prune(self, *, force: bool = False) -> tuple[list[str], int]:
        """Garbage collection: remove the layers no image uses (and stale temporary files).
        A layer a running container still mounts is kept unless `force`. Returns (the layers
        removed, bytes freed)."""
        removed: list[str] = []
        freed = 0
        self._sweep_tmp()
        with self._lock():
            data = self._read_index()
            used = {layer for d in data["images"].values() for layer in d["layers"]}
            sizes = data.get("layer_sizes", {})
            try:
                entries = sorted(os.listdir(self.layers_dir))
            except FileNotFoundError:
                entries = []
            for hexd in entries:
                digest = f"sha256:{hexd}"
                if digest in used or len(hexd) != 64:
                    continue
                p = os.path.join(self.layers_dir, hexd)
                if not force and mounted_by(p) is not None:
                    continue
                trash = os.path.join(self.tmp_dir, f"{os.getpid()}-gc-{secrets.token_hex(6)}")
                os.makedirs(self.tmp_dir, mode=0o700, exist_ok=True)
                os.rename(p, trash)
                shutil.rmtree(trash, ignore_errors=True)
                freed += int(sizes.pop(digest, 0))
                removed.append(digest)
                _unlink(os.path.join(self.root, "locks", hexd))
            if removed:
                self._write_index(data)
        return removed, freed

    def remove(self, ref: str, *, force: bool = False) -> tuple[Image, list[str]]:
        """Remove the image `ref`; returns it and the layers deleted (those no other image uses).
        Refused when a running container's mounts use one of those layers, unless `force`."""
        name, tag, digest = parse_any(ref)
        with self._lock():
            data = self._read_index()
            found = self.find(ref)
            if found is None:
                shown = f"{name}@{digest}" if tag == NO_TAG else f"{name}:{tag}"
                raise ImageNotFound(f"image {shown} is not in the local store ({self.root})")
            image = found
            still_used = {layer for r, other in data["images"].items() if r != image.ref for layer in other["layers"]}
            unused = [layer for layer in image.layers if layer not in still_used]
            if not force:
                for layer in unused:
                    pid = mounted_by(self.layer_path(layer))
                    if pid is not None:
                        raise ImageStoreError(f"image {image.ref} is in use by a running container (pid {pid}); "
                                              "stop it first")
            del data["images"][image.ref]
            self._write_index(data)
            removed = []
            for layer in unused:
                p = self.layer_path(layer)
                trash = os.path.join(self.root, "tmp", f"{os.getpid()}-rm-{secrets.token_hex(6)}")
                try:
                    os.makedirs(os.path.dirname(trash), mode=0o700, exist_ok=True)
                    os.rename(p, trash)  # out of sight at once; the tree is deleted after
                except FileNotFoundError:
                    continue
                shutil.rmtree(trash, ignore_errors=True)
                removed.append(layer)
            if removed and data.get("layer_sizes"):
                for layer in removed:
                    data["layer_sizes"].pop(layer, None)
                self._write_index(data)
        return image, removed


class _Lock:
    def __init__(self, path: str):
        self.path = path
        self.fd = -1

    def __enter__(self) -> _Lock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # releases the lock


def mounted_by(layer_dir: str) -> int | None:
    """A pid whose mount namespace has a mount made from `layer_dir` (a container's root), or None."""
    needle = os.path.basename(layer_dir)
    seen: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry}/ns/mnt").st_ino
            if ns in seen:
                continue
            seen.add(ns)
            with open(f"/proc/{entry}/mountinfo") as f:
                text = f.read()
        except OSError:
            continue
        if needle in text and any(layer_dir in line for line in text.splitlines()):
            return int(entry)
    return None


# --- importing a directory ---------------------------------------------------------------------


def _walk(root: str, rel: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """Every entry below `root` as (relative path, lstat), sorted, parents before children."""
    names = sorted(os.listdir(os.path.join(root, rel) if rel else root))
    for n in names:
        r = f"{rel}/{n}" if rel else n
        st = os.lstat(os.path.join(root, r))
        yield r, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root, r)


def copy_tree(src: str, dest: str) -> tuple[str, int]:
    """Copy the tree `src` to `dest` (which must not exist): modes, owners, times, symlinks, hard
    links and FIFOs kept; device nodes and sockets skipped. Returns (sha256 hex of the tree, size)."""
    h = _sha256(b"pysup-tree-v1\0")
    size = 0
    os.mkdir(dest, 0o700)
    st_root = os.lstat(src)
    links: dict[tuple[int, int], str] = {}
    dirs: list[tuple[str, os.stat_result]] = [(dest, st_root)]
    h.update(_entry_header(".", "d", st_root))
    for rel, st in _walk(src):
        s, d = os.path.join(src, rel), os.path.join(dest, rel)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(d, 0o700)
            dirs.append((d, st))
            h.update(_entry_header(rel, "d", st) + _copy_xattrs(s, d))
            continue
        if stat.S_ISLNK(mode):
            target = os.readlink(s)
            os.symlink(target, d)
            h.update(_entry_header(rel, "l", st) + os.fsencode(target) + b"\0")
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                os.link(links[key], d)
                h.update(_entry_header(rel, "h", st) + os.fsencode(os.path.relpath(links[key], dest)) + b"\0")
                continue
            links[key] = d
            fh = _sha256()
            with open(s, "rb") as fin, open(d, "xb") as fout:
                while chunk := fin.read(_CHUNK):
                    fh.update(chunk)
                    fout.write(chunk)
            size += st.st_size
            h.update(_entry_header(rel, "f", st) + fh.digest())
            h.update(_copy_xattrs(s, d))
        elif stat.S_ISFIFO(mode):
            os.mkfifo(d, 0o600)
            h.update(_entry_header(rel, "p", st))
        else:
            continue  # device nodes, sockets: never part of an image (the runtime makes /dev)
        _set_attrs(d, st)
    for d, st in reversed(dirs):  # children first: setting a directory's times after its content
        _set_attrs(d, st)
    return h.hexdigest(), size


def _copy_xattrs(src: str, dest: str) -> bytes:
    """Copy the extended attributes of a file or directory (file capabilities are
    `security.capability`); returns them canonically for the tree digest."""
    try:
        names = sorted(os.listxattr(src, follow_symlinks=False))
    except OSError:
        return b""
    out = b""
    for name in names:
        try:
            value = os.getxattr(src, name, follow_symlinks=False)
            os.setxattr(dest, name, value, follow_symlinks=False)
        except OSError as e:
            raise ImageStoreError(f"import {src}: extended attribute {name}: {e.strerror}") from None
        out += b"x\0" + name.encode() + b"\0" + value
    return out


def _entry_header(rel: str, kind: str, st: os.stat_result) -> bytes:
    return f"{kind}\0{rel}\0{stat.S_IMODE(st.st_mode):o}\0{st.st_uid}\0{st.st_gid}\0".encode("utf-8", "surrogateescape")


def _set_attrs(path: str, st: os.stat_result) -> None:
    caps = None
    if stat.S_ISREG(st.st_mode):
        try:
            caps = os.getxattr(path, "security.capability")
        except OSError:
            pass
    os.lchown(path, st.st_uid, st.st_gid)
    if caps is not None:
        os.setxattr(path, "security.capability", caps)  # chown drops file capabilities: put them back
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))  # after chown: chown clears setuid bits
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


# --- importing a tarball -----------------------------------------------------------------------


def file_digest(path: str) -> str:
    h = _sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def unpack_tarball(path: str, dest: str, *, layer: bool = False, digest: str | None = None) -> tuple[str, int]:
    """Unpack a rootfs tarball into `dest` (which must not exist). Refuses a member whose name
    is absolute or climbs out with `..`, and a hard link to outside; skips device nodes; keeps
    symlinks (any target: they are resolved inside the container), hard links, modes and owners.
    Every parent directory is resolved inside `dest` (a symlink in the archive never leads a later
    member outside). Returns (sha256 hex of the tarball, size of the unpacked files).

    `layer`: an image layer (OCI / Docker): a whiteout `.wh.NAME` becomes an overlayfs whiteout
    (a 0:0 character device), an opaque marker `.wh..wh..opq` the `trusted.overlay.opaque`
    attribute of its directory. `digest`: the tarball's sha256 when known (not hashed again)."""
    import subprocess
    import tarfile

    digest = digest or file_digest(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    proc = None
    try:
        if magic == ZSTD_MAGIC:
            if shutil.which("zstd") is None:
                raise ImageStoreError(f"import {path}: a zstd tarball needs the zstd program (apt-get install zstd)")
            proc = subprocess.Popen(["zstd", "-dcq", "--", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            tar = tarfile.open(fileobj=proc.stdout, mode="r|")
        else:
            tar = tarfile.open(path, mode="r|*")
    except tarfile.TarError as e:
        raise ImageStoreError(f"import {path}: not a tar archive ({e})") from None
    os.mkdir(dest, 0o755)
    size = 0
    dirs: list[tarfile.TarInfo] = []
    try:
        with tar:
            tar.errorlevel = 2
            for member in tar:
                name = _member_name(path, member.name)
                if name is None:  # the archive's root itself
                    continue
                if member.ischr() or member.isblk():
                    continue
                parent, base = posixpath.split(name)
                if layer and base.startswith(".wh."):
                    _whiteout(dest, parent, base)
                    continue
                target = os.path.join(_secure_dir(dest, parent), base)
                rel = os.path.relpath(target, dest)
                if member.islnk():
                    link = _member_name(path, member.linkname)
                    if link is None:
                        raise ImageStoreError(f"import {path}: hard link {member.name} to the archive's root")
                    lparent, lbase = posixpath.split(link)
                    member.linkname = os.path.relpath(os.path.join(_secure_dir(dest, lparent), lbase), dest)
                if not member.isdir():
                    _remove_existing(target)
                elif os.path.lexists(target) and not os.path.isdir(target):
                    _remove_existing(target)
                member.name = rel
                if member.isdir():
                    dirs.append(member)
                    member = _copy_info(member)  # made 0700 now; its own mode and times at the end
                    member.mode = 0o700
                tar.extract(member, dest, set_attrs=not member.isdir(), numeric_owner=True)
                _set_pax_xattrs(path, member, os.path.join(dest, member.name))
                if member.isreg():
                    size += member.size
            for member in reversed(dirs):  # modes and times of directories after their content
                d = os.path.join(dest, member.name)
                if os.path.isdir(d) and not os.path.islink(d):
                    os.lchown(d, member.uid, member.gid)
                    os.chmod(d, member.mode & 0o7777)
                    os.utime(d, (member.mtime, member.mtime))
    except tarfile.TarError as e:
        raise ImageStoreError(f"import {path}: {e}") from None
    finally:
        if proc is not None:
            proc.stdout.close()  # type: ignore[union-attr]
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            if proc.stderr:
                proc.stderr.close()
            if proc.wait() != 0 and err:
                raise ImageStoreError(f"import {path}: zstd: {err.splitlines()[-1]}")
    return digest, size


WHITEOUT_OPAQUE = ".wh..wh..opq"


def _whiteout(dest: str, parent: str, base: str) -> None:
    """An OCI whiteout in a layer, made the overlayfs way (the layer is a lowerdir)."""
    pdir = _secure_dir(dest, parent)
    os.makedirs(pdir, mode=0o755, exist_ok=True)
    if base == WHITEOUT_OPAQUE:
        os.setxattr(pdir, "trusted.overlay.opaque", b"y", follow_symlinks=False)
        return
    if base.startswith(".wh..wh."):
        return  # other AUFS metadata (.wh..wh.plnk, ...): not content
    target = os.path.join(pdir, base[len(".wh."):])
    _remove_existing(target)
    os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def _set_pax_xattrs(archive: str, member: Any, target: str) -> None:
    """Extended attributes stored as PAX `SCHILY.xattr.<name>` records (GNU tar --xattrs, podman
    export): file capabilities among them. Set after the owner (chown drops capabilities)."""
    for key, value in (member.pax_headers or {}).items():
        if not key.startswith("SCHILY.xattr.") or member.issym():
            continue
        name = key[len("SCHILY.xattr."):]
        raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        try:
            os.setxattr(target, name, raw, follow_symlinks=False)
        except OSError as e:
            raise ImageStoreError(f"import {archive}: {member.name}: extended attribute {name}: {e.strerror}") from None


def _copy_info(member: Any) -> Any:
    import copy

    return copy.copy(member)


def _member_name(archive: str, name: str) -> str | None:
    """A member's name, normalised and relative; None for the root ("." or "./"). Refuses absolute
    names and names that climb out of the root."""
    if name.startswith("/"):
        raise ImageStoreError(f"import {archive}: member {name!r} has an absolute path (refused)")
    norm = posixpath.normpath(name)
    if norm == ".":
        return None
    if norm == ".." or norm.startswith("../"):
        raise ImageStoreError(f"import {archive}: member {name!r} escapes the root (refused)")
    return norm


def _secure_dir(root: str, rel: str) -> str:
    """`root/rel` with every symlink on the way resolved as if `root` were `/`."""
    if not rel:
        return root
    from ..runtime.rootfs import secure_join

    return secure_join(root, rel)


def _remove_existing(path: str) -> None:
    """GNU tar's default: a member replaces what an earlier one left there (never written through)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _inside(root: str, path: str) -> bool:
    root = os.path.realpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/") or root.startswith(path.rstrip("/") + "/")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as e:  # pragma: no cover - some filesystems refuse fsync on a directory
        if e.errno not in (errno.EINVAL, errno.EROFS):
            raise
    finally:
        os.close(fd)


def human_size(n: int) -> str:
    """Docker's style: 4.2MB (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{n}B"
        n /= 1000  # type: ignore[assignment]
    return f"{n}B"  # pragma: no cover
