"""Pulling images over the OCI distribution API (https://github.com/opencontainers/distribution-spec).

    settings = load_settings(stack.x.registries)            # mirrors, insecure registries
    async with RegistryClient(settings) as client:
        image = await client.pull("busybox:1.36", store)    # -> supervisor.images.store.Image

- Endpoints: a registry's mirrors first (`x-pysup.registries.HOST.mirrors`, or the file
  `$PYSUP_REGISTRIES` / `/etc/pysup/registries.yaml`, same shape), then the registry itself
  (`docker.io` is `registry-1.docker.io`). A mirror that fails or lacks the image is skipped.
- TLS unless insecure: an insecure registry (`insecure: true`, or any host on loopback, as Docker
  has it) is tried over HTTPS without verification, then over plain HTTP.
- Auth: anonymous; on a 401 the challenge is answered: `Bearer` with a token from the realm
  (sent the credentials when there are some), `Basic` with the credentials. Credentials come from a
  Docker `config.json` (`$REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json`,
  `~/.docker/config.json`; `auths.HOST.auth` = base64 "user:password", or username/password).
- An image index is resolved for this host's platform (linux/amd64, linux/arm64/v8, ...).
  Manifests, the config and every layer are verified against their digests and sizes.
- Layer downloads are retried (3 times, with backoff) and resumed with a `Range` request where the
  registry supports it. One layer is fetched and unpacked once: a per-layer flock(2) in the store
  makes a second pull of it (in this process or another) wait and then find it there.
"""

from __future__ import annotations

import base64
import json
import os
import platform as _platform
import random
from collections.abc import Mapping
from typing import Any

import httpx
import trio

from .reference import DEFAULT_REGISTRY, Reference, ReferenceError, parse
from .store import NO_TAG, Image, ImageStore, ImageStoreError

MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST)
MANIFEST_TYPES = (MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST)
ACCEPT = ", ".join((MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST))
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
MAX_MANIFEST = 4 << 20
RETRIES = 3
PARALLEL_LAYERS = 3


class RegistryError(ImageStoreError):
    """A pull failed: one line naming the image and why."""


# --- settings ----------------------------------------------------------------------------------


class RegistrySettings:
    """Mirrors and insecure registries: {host: (mirror, ...)} and {host, ...}."""

    def __init__(self, mirrors: Mapping[str, tuple[str, ...]] | None = None, insecure: Any = ()):
        self.mirrors = dict(mirrors or {})
        self.insecure = set(insecure)

    def is_insecure(self, host: str) -> bool:
        if host in self.insecure:
            return True
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
        name = name.strip("[]")
        return name in ("localhost", "::1") or name.startswith("127.")

    def endpoints(self, registry: str) -> list[tuple[str, bool]]:
        """(host or URL, is a mirror), mirrors first."""
        origin = DOCKER_HUB_ENDPOINT if registry == DEFAULT_REGISTRY else registry
        return [(m, True) for m in self.mirrors.get(registry, ())] + [(origin, False)]


def load_settings(registries: Mapping[str, Any] | None = None, path: str | None = None) -> RegistrySettings:
    """Settings from the config file (`path`, `$PYSUP_REGISTRIES`, else `/etc/pysup/registries.yaml`
    if it exists) overlaid with a stack's `x-pysup.registries` (model `Registry` objects or dicts)."""
    merged: dict[str, Any] = {}
    path = path or os.environ.get("PYSUP_REGISTRIES") or "/etc/pysup/registries.yaml"
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    except OSError as e:
        raise RegistryError(f"registries file {path}: {e.strerror}") from None
    if text.strip():
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise RegistryError(f"registries file {path}: not YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise RegistryError(f"registries file {path}: expected a mapping of registry hosts")
        merged.update(data.get("registries", data) if isinstance(data.get("registries"), dict) else data)
    merged.update(registries or {})
    mirrors: dict[str, tuple[str, ...]] = {}
    insecure = set()
    for host, r in merged.items():
        ms = r.get("mirrors", ()) if isinstance(r, dict) else getattr(r, "mirrors", ())
        ins = r.get("insecure", False) if isinstance(r, dict) else getattr(r, "insecure", False)
        if ms:
            mirrors[str(host)] = tuple(str(m) for m in ms)
        if ins:
            insecure.add(str(host))
    return RegistrySettings(mirrors, insecure)


# --- credentials -------------------------------------------------------------------------------


def auth_file_candidates() -> list[str]:
    out = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        out.append(os.environ["REGISTRY_AUTH_FILE"])
    if os.environ.get("DOCKER_CONFIG"):
        out.append(os.path.join(os.environ["DOCKER_CONFIG"], "config.json"))
    out.append(os.path.join(os.path.expanduser("~"), ".docker", "config.json"))
    return out


def load_credentials(path: str | None = None) -> dict[str, tuple[str, str]]:
    """{registry host: (user, password)} from a Docker `config.json` (the first that exists)."""
    for p in [path] if path else auth_file_candidates():
        try:
            with open(p) as f:
                data = json.load(f)
        except FileNotFoundError:
            if path:
                raise RegistryError(f"credentials file {p}: not found") from None
            continue
        except (OSError, ValueError) as e:
            raise RegistryError(f"credentials file {p}: unreadable ({e})") from None
        out = {}
        for key, entry in (data.get("auths") or {}).items():
            if not isinstance(entry, dict):
                continue
            host = key.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
            if key == DOCKER_HUB_AUTH_KEY or host in ("index.docker.io", "registry-1.docker.io"):
                host = DEFAULT_REGISTRY
            user, pw = entry.get("username"), entry.get("password")
            if entry.get("auth"):
                try:
                    user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
                except ValueError:
                    raise RegistryError(f"credentials file {p}: auths.{key}.auth is not base64 user:password") from None
            if user:
                out[host] = (user, pw or "")
        return out
    return {}


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="https://auth",service="reg",scope="x"` → ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().strip(",").strip()
        i = eq + 1
        if i < len(rest) and rest[i] == '"':
            end = rest.find('"', i + 1)
            end = len(rest) if end < 0 else end
            params[key.lower()] = rest[i + 1:end]
            i = end + 1
        else:
            end = rest.find(",", i)
            end = len(rest) if end < 0 else end
            params[key.lower()] = rest[i:end].strip()
            i = end
        while i < len(rest) and rest[i] in ", ":
            i += 1
    return scheme.lower(), params


# --- platform ----------------------------------------------------------------------------------


def host_platform() -> tuple[str, str, str | None]:
    """(os, architecture, variant) as OCI names this host."""
    m = _platform.machine().lower()
    arch, variant = {
        "x86_64": ("amd64", None), "amd64": ("amd64", None), "aarch64": ("arm64", "v8"), "arm64": ("arm64", "v8"),
        "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"), "i686": ("386", None), "i386": ("386", None),
        "ppc64le": ("ppc64le", None), "s390x": ("s390x", None), "riscv64": ("riscv64", None),
    }.get(m, (m, None))
    return "linux", arch, variant


def choose_manifest(index: dict[str, Any], plat: tuple[str, str, str | None]) -> dict[str, Any] | None:
    os_, arch, variant = plat
    best = None
    for m in index.get("manifests") or []:
        if not isinstance(m, dict):
            continue
        p = m.get("platform") if isinstance(m.get("platform"), dict) else {}
        if p.get("os") != os_ or p.get("architecture") != arch:
            continue
        if variant and p.get("variant") not in (None, variant):
            continue
        if best is None or p.get("variant") == variant:
            best = m
    return best


# --- progress ----------------------------------------------------------------------------------


class Progress:
    """No progress shown. `RichProgress` draws bars on a TTY."""

    def add(self, what: str, total: int) -> Any:
        return None

    def advance(self, task: Any, n: int) -> None:
        pass

    def reset(self, task: Any, completed: int) -> None:
        pass

    def finish(self, task: Any, note: str) -> None:
        pass


class RichProgress(Progress):
    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress as P, TextColumn, TransferSpeedColumn

        self.p = P(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   transient=False, console=Console(stderr=True))

    def __enter__(self) -> RichProgress:
        self.p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.p.stop()

    def add(self, what: str, total: int) -> Any:
        return self.p.add_task(what, total=total)

    def advance(self, task: Any, n: int) -> None:
        self.p.advance(task, n)

    def reset(self, task: Any, completed: int) -> None:
        self.p.update(task, completed=completed)

    def finish(self, task: Any, note: str) -> None:
        t = self.p.tasks[task] if isinstance(task, int) and task < len(self.p.tasks) else None
        self.p.update(task, completed=t.total if t else None, description=note)


# --- the client --------------------------------------------------------------------------------


class _Fail(Exception):
    """An endpoint failed. `fatal`: the registry answered definitively (not a network fault); a
    mirror is skipped either way."""

    def __init__(self, message: str, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


class RegistryClient:
    def __init__(self, settings: RegistrySettings | None = None, *, credentials: Mapping[str, tuple[str, str]] | None = None,
                 timeout: float = 30.0, retries: int = RETRIES, progress: Progress | None = None,
                 platform: tuple[str, str, str | None] | None = None, transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings or RegistrySettings()
        self.credentials = dict(load_credentials() if credentials is None else credentials)
        self.timeout = timeout
        self.retries = retries
        self.progress = progress or Progress()
        self.platform = platform or host_platform()
        self.transport = transport  # tests: an in-memory registry
        self._tokens: dict[tuple[str, str], str] = {}
        self._scheme: dict[str, str] = {}
        self._secure: httpx.AsyncClient | None = None
        self._insecure: httpx.AsyncClient | None = None

    async def __aenter__(self) -> RegistryClient:
        t = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
        self._secure = httpx.AsyncClient(timeout=t, follow_redirects=True, transport=self.transport)
        self._insecure = httpx.AsyncClient(timeout=t, follow_redirects=True, verify=False, transport=self.transport)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for c in (self._secure, self._insecure):
            if c is not None:
                await c.aclose()

    # -- HTTP --

    def _base(self, endpoint: str) -> tuple[list[str], httpx.AsyncClient]:
        assert self._secure is not None and self._insecure is not None
        if "://" in endpoint:
            scheme, _, host = endpoint.partition("://")
            return [f"{scheme}://{host.rstrip('/')}"], self._secure if scheme == "https" else self._insecure
        if self.settings.is_insecure(endpoint):
            known = self._scheme.get(endpoint)
            schemes = [known] if known else ["https", "http"]
            return [f"{s}://{endpoint}" for s in schemes], self._insecure
        return [f"https://{endpoint}"], self._secure

    async def _send(self, endpoint: str, registry: str, repo: str, path: str, headers: dict[str, str],
                    *, stream: bool = False) -> httpx.Response:
        """GET `/v2/<repo>/<path>` with auth and retries; a streamed response must be closed."""
        bases, client = self._base(endpoint)
        last: Exception | None = None
        for base in bases:
            for attempt in range(self.retries + 1):
                try:
                    resp = await self._get_authed(client, base, endpoint, registry, repo, path, headers, stream)
                except _Fail:
                    raise
                except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                    last = e
                    if len(bases) > 1 and base.startswith("https"):
                        break  # an insecure registry: try plain HTTP now
                    if _unknown_host(e):
                        break  # a name that does not resolve does not resolve on a retry either
                    if attempt < self.retries:
                        await trio.sleep(0.2 * 2 ** attempt * (1 + random.random() / 2))
                        continue
                    break
                except httpx.HTTPError as e:
                    last = e
                    if attempt < self.retries:
                        await trio.sleep(0.2 * 2 ** attempt * (1 + random.random() / 2))
                        continue
                    break
                if resp.status_code in (429, 500, 502, 503, 504) and attempt < self.retries:
                    await resp.aclose()
                    await trio.sleep(0.2 * 2 ** attempt * (1 + random.random() / 2))
                    continue
                if len(bases) > 1:
                    self._scheme[endpoint] = base.partition(":")[0]
                return resp
        raise _Fail(f"registry {endpoint} unreachable ({_why(last)})")

    async def _get_authed(self, client: httpx.AsyncClient, base: str, endpoint: str, registry: str, repo: str,
                          path: str, headers: dict[str, str], stream: bool) -> httpx.Response:
        url = f"{base}/v2/{repo}/{path}"
        scope = f"repository:{repo}:pull"
        h = dict(headers)
        token = self._tokens.get((endpoint, scope))
        if token:
            h["Authorization"] = token
        resp = await client.send(client.build_request("GET", url, headers=h), stream=stream)
        if resp.status_code != 401:
            return resp
        challenge = resp.headers.get("www-authenticate", "")
        await resp.aclose()
        auth = await self._answer(client, endpoint, registry, scope, challenge)
        if auth is None:
            raise _Fail(f"registry {endpoint}: authentication required and no credentials for it "
                        f"(a Docker config.json: {', '.join(auth_file_candidates())})", fatal=True)
        self._tokens[(endpoint, scope)] = auth
        h["Authorization"] = auth
        resp = await client.send(client.build_request("GET", url, headers=h), stream=stream)
        if resp.status_code in (401, 403):
            await resp.aclose()
            if self._creds(endpoint, registry) is None:  # Docker Hub answers so for a repository that does not exist
                raise _Fail(f"not found in registry {endpoint}, or it needs credentials (access denied)", fatal=True)
            raise _Fail(f"registry {endpoint}: access denied (credentials refused)", fatal=True)
        return resp

    def _creds(self, endpoint: str, registry: str) -> tuple[str, str] | None:
        host = endpoint.partition("://")[2] or endpoint
        return self.credentials.get(host.rstrip("/")) or self.credentials.get(registry)

    async def _answer(self, client: httpx.AsyncClient, endpoint: str, registry: str, scope: str,
                      challenge: str) -> str | None:
        scheme, params = parse_challenge(challenge)
        creds = self._creds(endpoint, registry)
        if scheme == "basic":
            if creds is None:
                return None
            return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        if scheme != "bearer" or "realm" not in params:
            raise _Fail(f"registry {endpoint}: unsupported authentication challenge {challenge!r}", fatal=True)
        query = {"scope": params.get("scope") or scope}
        if params.get("service"):
            query["service"] = params["service"]
        try:
            r = await client.get(params["realm"], params=query, auth=creds)
        except httpx.HTTPError as e:
            raise _Fail(f"registry {endpoint}: token service {params['realm']} unreachable ({_why(e)})") from None
        if r.status_code in (401, 403):
            raise _Fail(f"registry {endpoint}: access denied by the token service"
                        + ("" if creds else " (no credentials for it)"), fatal=True)
        if r.status_code != 200:
            raise _Fail(f"registry {endpoint}: token service answered HTTP {r.status_code}", fatal=True)
        try:
            data = r.json()
            token = data.get("token") or data.get("access_token")
        except ValueError:
            token = None
        if not token:
            raise _Fail(f"registry {endpoint}: token service gave no token", fatal=True)
        return f"Bearer {token}"

    # -- manifests and blobs --

    async def _manifest(self, endpoint: str, ref: Reference, reference: str) -> tuple[dict[str, Any], str, str]:
        """(manifest, media type, digest) of `reference` (tag or digest), verified."""
        resp = await self._send(endpoint, ref.registry, ref.repository, f"manifests/{reference}", {"Accept": ACCEPT})
        try:
            if resp.status_code == 404:
                raise _Fail(f"not found in registry {endpoint} (manifest unknown)")
            if resp.status_code != 200:
                raise _Fail(f"registry {endpoint} answered HTTP {resp.status_code} for the manifest")
            body = resp.content
        finally:
            await resp.aclose()
        if len(body) > MAX_MANIFEST:
            raise _Fail(f"registry {endpoint}: manifest larger than {MAX_MANIFEST} bytes", fatal=True)
        digest = "sha256:" + _sha256(body)
        expected = reference if reference.startswith("sha256:") else resp.headers.get("docker-content-digest")
        if expected and expected.startswith("sha256:") and expected != digest:
            raise _Fail(f"manifest digest mismatch (expected {expected}, got {digest})", fatal=True)
        try:
            manifest = json.loads(body)
        except ValueError:
            raise _Fail(f"registry {endpoint}: the manifest is not JSON", fatal=True) from None
        if not isinstance(manifest, dict):
            raise _Fail(f"registry {endpoint}: the manifest is not a JSON object", fatal=True)
        media = manifest.get("mediaType") or resp.headers.get("content-type", "").split(";")[0].strip()
        if media not in INDEX_TYPES + MANIFEST_TYPES:
            if "manifests" in manifest:
                media = MEDIA_OCI_INDEX
            elif "layers" in manifest and "config" in manifest:
                media = MEDIA_OCI_MANIFEST
            else:
                raise _Fail(f"unsupported manifest type {media or 'unknown'!r} (schema 1 images are not supported)",
                            fatal=True)
        return manifest, media, digest

    async def _blob_bytes(self, endpoint: str, ref: Reference, desc: dict[str, Any]) -> bytes:
        resp = await self._send(endpoint, ref.registry, ref.repository, f"blobs/{desc['digest']}", {})
        try:
            if resp.status_code != 200:
                raise _Fail(f"registry {endpoint} answered HTTP {resp.status_code} for blob {desc['digest'][:19]}")
            body = resp.content
        finally:
            await resp.aclose()
        got = "sha256:" + _sha256(body)
        if got != desc["digest"]:
            raise _Fail(f"config {desc['digest'][:19]}: digest mismatch (got {got[:19]})", fatal=True)
        return body

    async def _download(self, endpoint: str, ref: Reference, desc: dict[str, Any], dest: str) -> None:
        """The blob `desc` into the file `dest`, resumed with Range after an interruption, verified."""
        digest, size = desc["digest"], int(desc.get("size", -1))
        short = digest[:19]
        task = self.progress.add(f"{short[7:19]} downloading", size if size >= 0 else 0)
        h = _Hasher()
        have = 0
        problem = ""
        with open(dest, "wb") as f:
            for attempt in range(self.retries + 1):
                headers = {"Range": f"bytes={have}-"} if have else {}
                resp = await self._send(endpoint, ref.registry, ref.repository, f"blobs/{digest}", headers, stream=True)
                try:
                    if resp.status_code == 200 and have:  # the registry ignored Range: from the start
                        f.seek(0)
                        f.truncate()
                        h = _Hasher()
                        have = 0
                        self.progress.reset(task, 0)
                    elif resp.status_code == 416 and have:  # nothing past what we have: the blob is short
                        raise _Fail(f"layer {short}: truncated ({have} of {size} bytes)", fatal=True)
                    elif resp.status_code not in (200, 206):
                        if resp.status_code == 404:
                            raise _Fail(f"layer {short}: not found in registry {endpoint} (blob unknown)")
                        raise _Fail(f"layer {short}: registry {endpoint} answered HTTP {resp.status_code}")
                    async for chunk in resp.aiter_raw():  # as received: an interruption keeps all so far
                        f.write(chunk)
                        h.update(chunk)
                        have += len(chunk)
                        self.progress.advance(task, len(chunk))
                        if size >= 0 and have > size:
                            raise _Fail(f"layer {short}: more data than its size {size}", fatal=True)
                    if size < 0 or have == size:
                        break
                    problem = f"truncated ({have} of {size} bytes)"
                except httpx.HTTPError as e:
                    problem = f"download interrupted ({_why(e)}) at {have} of {size} bytes"
                finally:
                    await resp.aclose()
                if attempt < self.retries:
                    await trio.sleep(0.1 * 2 ** attempt)
            else:
                raise _Fail(f"layer {short}: {problem}", fatal=True)
            f.flush()
            os.fsync(f.fileno())
        got = "sha256:" + h.hexdigest()
        if got != digest:
            raise _Fail(f"layer {short}: digest mismatch (got {got[:19]})", fatal=True)
        self.progress.finish(task, f"{short[7:19]} downloaded")

    # -- pull --

    async def pull(self, text: str, store: ImageStore) -> Image:
        """Pull `text` into `store`; the image is kept as `NAME:TAG` (or `NAME@DIGEST`). Raises
        RegistryError: one line naming the image."""
        try:
            ref = parse(text)
        except ReferenceError as e:
            raise RegistryError(str(e)) from None
        who = f"image {ref.familiar}"
        problems = []
        for endpoint, is_mirror in self.settings.endpoints(ref.registry):
            try:
                return await self._pull_from(endpoint, ref, store)
            except _Fail as e:
                if not is_mirror:  # a mirror that fails in any way is skipped: the next one, then the registry
                    if problems and not e.fatal:
                        raise RegistryError(f"{who}: {e} (mirrors: {'; '.join(problems)})") from None
                    raise RegistryError(f"{who}: {e}") from None
                problems.append(f"{endpoint}: {e}")
            except ImageStoreError as e:
                raise RegistryError(f"{who}: {str(e).removeprefix(who + ': ')}") from None
            except OSError as e:
                raise RegistryError(f"{who}: {e.strerror or e}") from None
        raise RegistryError(f"{who}: no endpoint")  # pragma: no cover

    async def _pull_from(self, endpoint: str, ref: Reference, store: ImageStore) -> Image:
        manifest, media, digest = await self._manifest(endpoint, ref, ref.reference)
        if media in INDEX_TYPES:
            chosen = choose_manifest(manifest, self.platform)
            if chosen is None:
                os_, arch, variant = self.platform
                plat = "/".join(p for p in (os_, arch, variant) if p)
                raise _Fail(f"no manifest for this platform ({plat}) in the image index", fatal=True)
            chosen = _descriptor(chosen, "the image index's entry", endpoint)
            manifest, media, digest2 = await self._manifest(endpoint, ref, chosen["digest"])
            if digest2 != chosen["digest"]:
                raise _Fail(f"manifest digest mismatch (expected {chosen['digest']}, got {digest2})", fatal=True)
            if media in INDEX_TYPES:
                raise _Fail("nested image index", fatal=True)
        layers = manifest.get("layers") or []
        if not isinstance(layers, list):
            raise _Fail(f"registry {endpoint}: malformed manifest (layers is not a list)", fatal=True)
        layers = [_descriptor(d, f"layer {i}", endpoint) for i, d in enumerate(layers)]
        blob = await self._blob_bytes(endpoint, ref, _descriptor(manifest.get("config"), "config", endpoint))
        try:
            config = json.loads(blob)
        except ValueError:
            config = None
        if not isinstance(config, dict) or not isinstance(config.get("config") or {}, dict):
            raise _Fail(f"registry {endpoint}: the image config is not a JSON object with a config object",
                        fatal=True)
        limiter = trio.CapacityLimiter(PARALLEL_LAYERS)
        who = f"image {ref.familiar}"
        try:
            async with trio.open_nursery() as nursery:
                for desc in layers:
                    nursery.start_soon(self._layer, endpoint, ref, store, desc, limiter, who)
        except BaseExceptionGroup as group:  # one layer's failure is the pull's: its own message
            first = _first_leaf(group)
            if isinstance(first, (_Fail, ImageStoreError, OSError)):
                raise first from None
            raise
        return store.add_image(ref.name, ref.tag or NO_TAG, layers=[d["digest"] for d in layers],
                               config=config.get("config") or {}, digest=digest, source=ref.canonical)

    async def _layer(self, endpoint: str, ref: Reference, store: ImageStore, desc: dict[str, Any],
                     limiter: trio.CapacityLimiter, who: str) -> None:
        digest = desc["digest"]
        store.layer_path(digest)  # validates it
        fd = os.open(store.layer_lock(digest), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            await _flock(fd)  # another pull of this layer (here or in another process) finishes first
            if store.has_layer(digest):
                return
            async with limiter:
                work = store._new_tmp()
                try:
                    blob = os.path.join(work, "blob")
                    await self._download(endpoint, ref, desc, blob)
                    await trio.to_thread.run_sync(lambda: store.commit_layer(digest, blob, what=who))
                finally:
                    _rmtree(work)  # not in a thread: an await here would not run when cancelled
        finally:
            os.close(fd)  # releases the flock


def _descriptor(d: Any, what: str, endpoint: str) -> dict[str, Any]:
    """A manifest's descriptor ({"digest": "sha256:...", "size": N, ...}), or a one-line failure
    (a registry's malformed answer is an error naming the image, not a traceback)."""
    if not isinstance(d, dict) or not isinstance(d.get("digest"), str):
        raise _Fail(f"registry {endpoint}: malformed manifest ({what} has no digest)", fatal=True)
    if "size" in d and (not isinstance(d["size"], int) or isinstance(d["size"], bool)):
        raise _Fail(f"registry {endpoint}: malformed manifest ({what}: size is not a number)", fatal=True)
    return d


def _unknown_host(e: BaseException) -> bool:
    import socket

    todo, n = [e], 0
    while todo and n < 20:
        x = todo.pop()
        n += 1
        if isinstance(x, socket.gaierror):
            return True
        todo += [c for c in (x.__cause__, x.__context__) if c is not None]
    return False


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            return _first_leaf(e)
        if not isinstance(e, trio.Cancelled):
            return e
    return group.exceptions[0]


async def _flock(fd: int) -> None:
    import fcntl

    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            await trio.sleep(0.05)


def _rmtree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _why(e: BaseException | None) -> str:
    if e is None:
        return "no answer"
    seen: list[BaseException] = []
    todo = [e]
    while todo and len(seen) < 20:  # the OSError under httpx's and trio's wrappers says it best
        x = todo.pop(0)
        seen.append(x)
        if isinstance(x, OSError) and x.errno:  # getaddrinfo's errors are negative: their own text
            return (x.strerror if x.errno < 0 and x.strerror else os.strerror(x.errno)).lower()
        todo += [c for c in (x.__cause__, x.__context__) if c is not None]
        todo += list(getattr(x, "exceptions", ()))
    if isinstance(e, httpx.TimeoutException):
        return "timed out"
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:200]


class _Hasher:
    def __init__(self) -> None:
        from hashlib import sha256

        self.h = sha256()

    def update(self, b: bytes) -> None:
        self.h.update(b)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def _sha256(b: bytes) -> str:
    from hashlib import sha256

    return sha256(b).hexdigest()

