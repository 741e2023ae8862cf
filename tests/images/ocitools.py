"""Helpers for the image tests: tarballs and OCI image layouts built in memory (no network)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
from pathlib import Path


def tar_bytes(members: list[tuple[str, str, bytes | str | None]]) -> bytes:
    """A tarball of (name, kind, data): kind 'f' file, 'd' dir, 'l' symlink (data: target),
    'h' hard link (data: target), 'c' char device."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            if kind == "f":
                raw = data.encode() if isinstance(data, str) else (data or b"")
                info.size, info.mode = len(raw), 0o755 if name.endswith(".sh") else 0o644
                tar.addfile(info, io.BytesIO(raw))
                continue
            if kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
            elif kind == "h":
                info.type, info.linkname = tarfile.LNKTYPE, str(data)
            elif kind == "c":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tar.addfile(info)
    return buf.getvalue()


def tar_of_dir(path: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(os.listdir(path)):
            tar.add(os.path.join(path, entry), arcname=entry)
    return buf.getvalue()


def _blob(layout: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    d = layout / "blobs" / "sha256"
    d.mkdir(parents=True, exist_ok=True)
    (d / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def make_oci_layout(layout: Path, layers: list[bytes], *, config: dict | None = None, tag: str = "latest",
                    compress: str = "gzip", arch: str = "amd64") -> dict:
    """An OCI image layout at `layout` with `layers` (uncompressed tarballs, base first)."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    descs, diff_ids = [], []
    for raw in layers:
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        if compress == "gzip":
            data, media = gzip.compress(raw, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"
        elif compress == "zstd":
            data = subprocess.run(["zstd", "-q", "-c"], input=raw, stdout=subprocess.PIPE, check=True).stdout
            media = "application/vnd.oci.image.layer.v1.tar+zstd"
        else:
            data, media = raw, "application/vnd.oci.image.layer.v1.tar"
        descs.append({"mediaType": media, **_blob(layout, data)})
    cfg = {"architecture": arch, "os": "linux", "config": config or {},
           "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    cdesc = {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(layout, json.dumps(cfg).encode())}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": cdesc,
                "layers": descs}
    mdesc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **_blob(layout, json.dumps(manifest).encode()),
             "annotations": {"org.opencontainers.image.ref.name": tag},
             "platform": {"os": "linux", "architecture": arch}}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [mdesc]}))
    return {"manifest_digest": mdesc["digest"], "layers": [d["digest"] for d in descs], "manifest": manifest}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
