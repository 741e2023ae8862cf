"""The registry client against an in-memory registry (httpx.MockTransport): the bearer-token flow
(challenge, token from the realm with the credentials, the token reused), a layer download cut off
mid-way and resumed with Range, an image index without this platform."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from ocitools import tar_bytes
from supervisor.images.registry import RegistryClient, RegistryError
from supervisor.images.store import ImageStore


def sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


class FakeRegistry:
    def __init__(self, *, cut_first_blob_at: int | None = None, honour_range: bool = True):
        self.layer = gzip.compress(tar_bytes([("hello", "f", "x" * 5000)]))
        self.config = json.dumps({"config": {"Cmd": ["/hello"]}}).encode()
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(self.config),
                       "size": len(self.config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(self.layer),
                        "size": len(self.layer)}]}).encode()
        self.cut = cut_first_blob_at
        self.honour_range = honour_range
        self.token_requests: list[httpx.Request] = []
        self.ranges: list[str | None] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.host == "auth.test":
            self.token_requests.append(request)
            if request.headers.get("authorization") != "Basic " + base64.b64encode(b"me:pw").decode():
                return httpx.Response(401)
            assert url.params["service"] == "reg.test" and url.params["scope"] == "repository:team/app:pull"
            return httpx.Response(200, json={"token": "T0K"})
        if request.headers.get("authorization") != "Bearer T0K":
            return httpx.Response(401, headers={"WWW-Authenticate":
                'Bearer realm="https://auth.test/token",service="reg.test",scope="repository:team/app:pull"'})
        path = url.path
        if path == "/v2/team/app/manifests/1":
            return httpx.Response(200, content=self.manifest, headers={
                "Content-Type": "application/vnd.oci.image.manifest.v1+json", "Docker-Content-Digest": sha(self.manifest)})
        if path == f"/v2/team/app/blobs/{sha(self.config)}":
            return httpx.Response(200, stream=_Stream(self.config))
        if path == f"/v2/team/app/blobs/{sha(self.layer)}":
            rng = request.headers.get("range")
            self.ranges.append(rng)
            if self.cut is not None:
                cut, self.cut = self.cut, None
                return httpx.Response(200, stream=_Broken(self.layer[:cut]))
            if rng and self.honour_range:
                start = int(rng.removeprefix("bytes=").rstrip("-"))
                return httpx.Response(206, stream=_Stream(self.layer[start:]))
            return httpx.Response(200, stream=_Stream(self.layer))
        return httpx.Response(404)


class _Stream(httpx.AsyncByteStream):  # a streamed body, as a real connection gives (content= is read at once)
    def __init__(self, data: bytes):
        self.data = data

    async def __aiter__(self):
        yield self.data


class _Broken(httpx.AsyncByteStream):
    def __init__(self, data: bytes):
        self.data = data

    async def __aiter__(self):
        yield self.data
        raise httpx.ReadError("connection reset")


@pytest.fixture
def store():
    d = tempfile.mkdtemp(prefix="pysup-test-proto-")
    try:
        yield ImageStore(str(Path(d) / "store"))
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def pull(fake: FakeRegistry, store: ImageStore, creds=None):
    async with RegistryClient(credentials=creds if creds is not None else {"reg.test": ("me", "pw")},
                              transport=httpx.MockTransport(fake.handler)) as c:
        return await c.pull("reg.test/team/app:1", store)


async def test_bearer_token_flow_with_credentials(store):
    fake = FakeRegistry()
    img = await pull(fake, store)
    assert img.config == {"Cmd": ["/hello"]} and (Path(store.layer_path(img.layers[0])) / "hello").exists()
    assert len(fake.token_requests) == 1  # one token for the manifest, the config and the layer


async def test_token_refused_is_one_line(store):
    with pytest.raises(RegistryError) as e:
        await pull(FakeRegistry(), store, creds={"reg.test": ("me", "bad")})
    assert str(e.value) == "image reg.test/team/app:1: registry reg.test: access denied by the token service"
    assert store.list() == []


@pytest.mark.parametrize("honour_range", [True, False])
async def test_an_interrupted_layer_download_resumes(store, honour_range):
    fake = FakeRegistry(honour_range=honour_range)
    fake.cut = len(fake.layer) // 2
    want = f"bytes={fake.cut}-"
    img = await pull(fake, store)
    assert fake.ranges == [None, want]
    assert (Path(store.layer_path(img.layers[0])) / "hello").read_text() == "x" * 5000


def _malformed(fake: FakeRegistry, case: str) -> None:
    manifest = json.loads(fake.manifest)
    if case == "no config":
        del manifest["config"]
    elif case == "layer without digest":
        manifest["layers"] = [{"size": 3}]
    elif case == "layers not a list":
        manifest["layers"] = {"digest": sha(fake.layer)}
    elif case == "size not a number":
        manifest["layers"][0]["size"] = "big"
    elif case == "manifest a list":
        manifest = [manifest]
    elif case in ("config not JSON", "config a list", "config.config a string"):
        fake.config = {"config not JSON": b"{nope", "config a list": b"[]",
                       "config.config a string": b'{"config": "x"}'}[case]
        manifest["config"].update(digest=sha(fake.config), size=len(fake.config))
    fake.manifest = json.dumps(manifest).encode()


@pytest.mark.parametrize("case", ["no config", "layer without digest", "layers not a list", "size not a number",
                                  "manifest a list", "config not JSON", "config a list", "config.config a string"])
async def test_a_malformed_manifest_or_config_is_one_line_not_a_traceback(store, case):
    """A registry's malformed answer is a RegistryError naming the image (a KeyError escaping
    would end a running `pysup up` when a live edit pulls: images.live catches RegistryError)."""
    fake = FakeRegistry()
    _malformed(fake, case)
    with pytest.raises(RegistryError) as e:
        await pull(fake, store)
    assert str(e.value).startswith("image reg.test/team/app:1: registry reg.test: "), str(e.value)
    assert store.list() == []
