"""Fixtures for the image tests: OCI layouts built here (from tar members or a busybox rootfs) and a
real registry (Debian's `docker-registry`) on a free loopback port, fed with Debian's `skopeo`.
Everything started is stopped and its files removed, even on failure."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from ocitools import free_port, make_oci_layout, tar_of_dir

REGISTRY_BIN = shutil.which("docker-registry")
SKOPEO_BIN = shutil.which("skopeo")
HTPASSWD_BIN = shutil.which("htpasswd")


class Registry:
    def __init__(self, root: Path, *, htpasswd: tuple[str, str] | None = None):
        auth = ""
        if htpasswd:
            subprocess.run([HTPASSWD_BIN, "-Bbc", str(root / "htpasswd"), *htpasswd], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            auth = f"auth:\n  htpasswd:\n    realm: pysup-test\n    path: {root / 'htpasswd'}\n"
        self._init(root, auth=auth, creds=htpasswd)

    def _init(self, root: Path, *, auth: str, creds: tuple[str, str] | None) -> None:
        self.root = root
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.creds = creds
        (root / "config.yml").write_text(
            f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n{auth}")
        self.log = open(root / "registry.log", "wb")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(root / "config.yml")], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"docker-registry did not start: {(root / 'registry.log').read_text()[-500:]}")
                time.sleep(0.05)

    @classmethod
    def with_token_auth(cls, root: Path, token_server: TokenServer) -> Registry:
        reg = cls.__new__(cls)
        reg._init(root, auth=(f"auth:\n  token:\n    realm: {token_server.realm}\n    service: {TokenServer.SERVICE}\n"
                              f"    issuer: {TokenServer.ISSUER}\n    rootcertbundle: {token_server.cert}\n"),
                  creds=token_server.creds)
        return reg

    def push(self, layout: Path, repo: str, tag: str = "latest", src_tag: str | None = None) -> None:
        cmd = [SKOPEO_BIN, "--insecure-policy", "copy", "-q", "--dest-tls-verify=false", "--preserve-digests"]
        if self.creds:
            cmd.append(f"--dest-creds={self.creds[0]}:{self.creds[1]}")
        cmd += [f"oci:{layout}:{src_tag or tag}", f"docker://{self.host}/{repo}:{tag}"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"skopeo copy failed: {r.stderr}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class TokenServer:
    """A Docker token service (https://distribution.github.io/distribution/spec/auth/token/) on
    loopback: basic-auth'd GET /token?service=&scope= → {"token": JWT}, RS256-signed with a
    self-signed certificate (openssl) that the registry trusts; grants the scopes asked for."""

    SERVICE = "pysup-test-registry"
    ISSUER = "pysup-test-issuer"

    def __init__(self, root: Path, creds: tuple[str, str]):
        import base64
        import http.server
        import json
        import threading
        import urllib.parse

        self.creds = creds
        self.key, self.cert = root / "token.key", root / "token.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=pysup-token",
                        "-days", "2", "-keyout", str(self.key), "-out", str(self.cert)],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True,
                             capture_output=True).stdout
        x5c = base64.b64encode(der).decode()
        server = self
        self.requests: list[str] = []

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                url = urllib.parse.urlparse(self.path)
                q = urllib.parse.parse_qs(url.query)
                server.requests.append(self.path)
                want = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
                if self.headers.get("Authorization") != want:
                    self.send_response(401)
                    self.end_headers()
                    return
                access = []
                for scope in q.get("scope", []):
                    kind, name, actions = scope.split(":")[0], ":".join(scope.split(":")[1:-1]), scope.split(":")[-1]
                    access.append({"type": kind, "name": name, "actions": actions.split(",")})
                now = int(time.time())
                header = {"typ": "JWT", "alg": "RS256", "x5c": [x5c]}
                claims = {"iss": TokenServer.ISSUER, "sub": creds[0], "aud": q.get("service", [""])[0],
                          "exp": now + 300, "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(),
                          "access": access}
                signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
                sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(server.key)], input=signing.encode(),
                                     check=True, capture_output=True).stdout
                body = json.dumps({"token": f"{signing}.{b64(sig)}", "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def _need_registry() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for name, b in (("docker-registry", REGISTRY_BIN), ("skopeo", SKOPEO_BIN)):
        if b is None:
            pytest.skip(f"needs {name} (scripts/install-system.sh)")


@pytest.fixture(scope="session")
def registry():
    """An anonymous registry on a free loopback port, for the whole session."""
    _need_registry()
    yield from _serve_registry("pysup-test-registry-")


@pytest.fixture(scope="session")
def auth_registry():
    """A registry with basic auth (htpasswd, bcrypt)."""
    _need_registry()
    if HTPASSWD_BIN is None:
        pytest.skip("needs htpasswd (apache2-utils)")
    yield from _serve_registry("pysup-test-registry-auth-", htpasswd=("pysup", "s3cret-pw"))


def _serve_registry(prefix: str, **kw):
    """A Registry in a fresh temporary directory, yielded; stopped and removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    reg = None
    try:
        reg = Registry(root, **kw)
        yield reg
    finally:
        if reg is not None:
            reg.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def token_registry():
    """A registry with token auth: a token service of the test's own (TokenServer) in front."""
    _need_registry()
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    root = Path(tempfile.mkdtemp(prefix="pysup-test-registry-token-"))
    tokens = reg = None
    try:
        tokens = TokenServer(root, ("pysup", "t0ken-pw"))
        reg = Registry.with_token_auth(root, tokens)
        reg.tokens = tokens
        yield reg
    finally:
        if reg is not None:
            reg.stop()
        if tokens is not None:
            tokens.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def busybox_layout(shared_busybox_rootfs):
    """An OCI layout of the busybox rootfs (one gzip layer) with a config, tag `1`."""
    d = Path(tempfile.mkdtemp(prefix="pysup-test-oci-"))
    try:
        info = make_oci_layout(d / "layout", [tar_of_dir(shared_busybox_rootfs)], tag="1", config={
            "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo image-cmd $GREETING from $(pwd)"],
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hello"], "WorkingDir": "/tmp",
            "User": "0", "ExposedPorts": {"80/tcp": {}}, "StopSignal": "SIGQUIT"})
        yield d / "layout", info
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tmp(scratch):
    """The shared `scratch` directory (pysup-test- prefix, traversable, for containers)."""
    return scratch


@pytest.fixture
def store(tmp):
    from supervisor.images.store import ImageStore

    return ImageStore(str(tmp / "store"))
