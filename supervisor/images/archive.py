"""`pysup image load FILE`: images from `docker save` tarballs and OCI image layouts (a directory or
a tar of one). Every layer is checked against its digest (OCI) and unpacked once into the store
(`ImageStore.commit_layer`); the image config is kept like a pulled image's.

- OCI layout: `oci-layout`, `index.json`, `blobs/sha256/...`. Each manifest of the index (nested
  indexes resolved for this host's platform) is loaded under its
  `org.opencontainers.image.ref.name` / `io.containerd.image.name` annotation (a bare tag is
  given the name of `--name`, or refused without it).
- `docker save`: `manifest.json` [{"Config", "RepoTags", "Layers"}]; untagged images need `--name`.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import stat
import tarfile
from typing import Any

from .reference import ReferenceError, parse
from .store import NO_TAG, Image, ImageStore, ImageStoreError, file_digest


def _extract(path: str, dest: str) -> None:
    """The regular files and directories of the tarball `path` (an OCI layout or docker save)."""
    try:
        with tarfile.open(path, "r|*") as tar:
            for m in tar:
                name = posixpath.normpath(m.name)
                if name.startswith(("/", "../")) or name == "..":
                    raise ImageStoreError(f"load {path}: member {m.name!r} escapes the archive (refused)")
                if name == ".":
                    continue
                target = os.path.join(dest, name)
                if m.isdir():
                    os.makedirs(target, 0o700, exist_ok=True)
                elif m.isreg():
                    os.makedirs(os.path.dirname(target), 0o700, exist_ok=True)
                    src = tar.extractfile(m)
                    assert src is not None
                    with src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                elif m.issym() or m.islnk():
                    # docker save links identical layers; resolve inside the archive only
                    link = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname)
                                              if m.issym() else m.linkname)
                    if link.startswith(("/", "../")) or link == "..":
                        raise ImageStoreError(f"load {path}: link {m.name!r} escapes the archive (refused)")
                    os.makedirs(os.path.dirname(target), 0o700, exist_ok=True)
                    src_path = os.path.join(dest, link)
                    if os.path.isfile(src_path):
                        os.link(src_path, target)
    except tarfile.TarError as e:
        raise ImageStoreError(f"load {path}: not a tar archive ({e})") from None


def _inside(root: str, rel: str, what: str) -> str:
    norm = posixpath.normpath(rel)
    if norm.startswith(("/", "../")) or norm == "..":
        raise ImageStoreError(f"{what}: path {rel!r} escapes the archive (refused)")
    p = os.path.join(root, norm)
    if not os.path.isfile(p):
        raise ImageStoreError(f"{what}: {rel} is missing from the archive")
    return p


def _blob(root: str, digest: str, what: str) -> str:
    algo, _, hexd = str(digest).partition(":")
    if algo != "sha256" or len(hexd) != 64 or not all(c in "0123456789abcdef" for c in hexd):
        raise ImageStoreError(f"{what}: invalid digest {digest!r}")
    p = _inside(root, f"blobs/sha256/{hexd}", what)
    return p


def _verified(root: str, digest: str, what: str) -> str:
    p = _blob(root, digest, what)
    got = "sha256:" + file_digest(p)
    if got != digest:
        raise ImageStoreError(f"{what}: blob {digest[:19]}: digest mismatch (got {got[:19]})")
    return p


def _name(ann: str | None, default_name: str | None, what: str) -> tuple[str, str]:
    """(familiar name, tag): `--name` when given (a bare-tag annotation becomes its tag when it has
    none), else the annotation when it is a reference (`busybox:1`, `docker.io/x/y:2`)."""
    bare_tag = bool(ann) and "/" not in ann and ":" not in ann  # type: ignore[operator]
    if default_name:
        last = default_name.rpartition("/")[2]
        full = default_name if (":" in last or "@" in last or not bare_tag) else f"{default_name}:{ann}"
    elif ann and not bare_tag:
        full = ann
    else:
        raise ImageStoreError(f"{what}: the image has no name" + (f" (only the tag {ann!r})" if ann else "")
                              + "; give one with --name NAME[:TAG]")
    try:
        r = parse(full)
    except ReferenceError as e:
        raise ImageStoreError(f"{what}: {e}") from None
    return r.name, r.tag or NO_TAG


def load(store: ImageStore, path: str, *, name: str | None = None) -> list[Image]:
    """Load every image of the archive or layout `path` into `store`."""
    what = f"load {path}"
    src = os.path.abspath(path)
    try:
        st = os.stat(src)
    except OSError as e:
        raise ImageStoreError(f"{what}: {e.strerror}") from None
    work = store._new_tmp()
    try:
        if stat.S_ISDIR(st.st_mode):
            root = src
        else:
            root = os.path.join(work, "archive")
            os.mkdir(root, 0o700)
            _extract(src, root)
        if os.path.isfile(os.path.join(root, "manifest.json")):
            return _load_docker(store, root, what, name)
        if os.path.isfile(os.path.join(root, "index.json")):
            return _load_oci(store, root, what, name)
        raise ImageStoreError(f"{what}: neither a docker save archive (manifest.json) nor an OCI layout (index.json)")
    except OSError as e:
        raise ImageStoreError(f"{what}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _read_json(p: str, what: str) -> Any:
    try:
        with open(p) as f:
            return json.load(f)
    except ValueError as e:
        raise ImageStoreError(f"{what}: {os.path.basename(p)} is not JSON ({e})") from None


def _commit(store: ImageStore, digest: str, blob: str, what: str) -> None:
    if not store.has_layer(digest):
        store.commit_layer(digest, blob, what=what)


def _load_docker(store: ImageStore, root: str, what: str, name: str | None) -> list[Image]:
    entries = _read_json(os.path.join(root, "manifest.json"), what)
    if not isinstance(entries, list) or not entries:
        raise ImageStoreError(f"{what}: manifest.json lists no image")
    out = []
    for e in entries:
        config = _read_json(_inside(root, e["Config"], what), what)
        layers = []
        for rel in e.get("Layers") or []:
            p = _inside(root, rel, what)
            digest = "sha256:" + file_digest(p)
            _commit(store, digest, p, what)
            layers.append(digest)
        tags = list(e.get("RepoTags") or []) or [None]
        for t in tags:
            n, tag = _name(t, name, what)
            out.append(store.add_image(n, tag, layers=layers, config=config.get("config") or {},
                                       digest=None, source=os.path.abspath(root)))
    return out


def _load_oci(store: ImageStore, root: str, what: str, name: str | None) -> list[Image]:
    from .registry import INDEX_TYPES, choose_manifest, host_platform

    index = _read_json(os.path.join(root, "index.json"), what)
    out = []
    for desc in index.get("manifests") or []:
        ann = (desc.get("annotations") or {})
        ref_name = ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name")
        manifest = _read_json(_verified(root, desc["digest"], what), what)
        digest = desc["digest"]
        if desc.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
            chosen = choose_manifest(manifest, host_platform())
            if chosen is None:
                raise ImageStoreError(f"{what}: no manifest for this platform in the image index")
            digest = chosen["digest"]
            manifest = _read_json(_verified(root, digest, what), what)
        config = _read_json(_verified(root, manifest["config"]["digest"], what), what)
        layers = []
        for ld in manifest.get("layers") or []:
            p = _verified(root, ld["digest"], what)
            _commit(store, ld["digest"], p, what)
            layers.append(ld["digest"])
        n, tag = _name(ref_name, name, what)
        out.append(store.add_image(n, tag, layers=layers, config=config.get("config") or {}, digest=digest,
                                   source=os.path.abspath(root)))
    if not out:
        raise ImageStoreError(f"{what}: index.json lists no image")
    return out
