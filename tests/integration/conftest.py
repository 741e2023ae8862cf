"""Real `pysup up` runs, as root: the CLI in a subprocess (real signals, real SIGKILL), a busybox
rootfs, PYSUP_STATE_DIR/PYSUP_RUNTIME_DIR in tmp_path, a unique project name per test. After every
test `up_env` checks that nothing of the project remains: process, cgroup, mount, runtime file."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/bin/busybox"):
        return "needs /bin/busybox (apt-get install busybox-static)"
    return None


SKIP = _why_not()


@pytest.fixture(scope="session")
def rootfs():
    if SKIP:
        pytest.skip(SKIP)
    d = tempfile.mkdtemp(prefix="pysup-uptest-rootfs-")
    try:
        subprocess.run(["bash", str(REPO / "scripts/make-busybox-rootfs.sh"), d], check=True)
        os.chmod(d, 0o755)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def alive(pid: int) -> bool:
    """Running (not a zombie). A zombie that is our child is reaped: this pytest process may be a
    child subreaper (the runtime tests make it one), and a container whose pysup was SIGKILLed
    is then re-parented to it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


class Up:
    """One `pysup up` process and its output."""

    def __init__(self, env: dict[str, str], workdir: Path, project: str, compose: Path, args: tuple[str, ...]):
        self.env, self.workdir, self.project, self.compose = env, workdir, project, compose
        n = len(list(workdir.glob("stderr-*")))
        self.out_path = workdir / f"stdout-{n}"
        self.err_path = workdir / f"stderr-{n}"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "supervisor", "--log-format", "json", "up", "-f", str(compose), "--no-color",
                 *args], stdout=out, stderr=err, env=env, cwd=workdir)
        self.t0 = time.monotonic()

    def events(self) -> list[dict]:
        out = []
        for line in self.err_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, pred, timeout: float = 10.0, what: str = ""):
        """The first event (dict) of pysup's JSON log that matches `pred`."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events():
                if pred(ev):
                    return ev
            if self.proc.poll() is not None and not any(pred(ev) for ev in self.events()):
                raise AssertionError(f"pysup exited ({self.proc.returncode}) before {what or pred}:\n{self.stderr()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or pred}:\n{self.stderr()[-3000:]}")
            time.sleep(0.05)

    def wait_event(self, event: str, timeout: float = 10.0, **fields):
        return self.wait_for(lambda e: e.get("event") == event and all(e.get(k) == v for k, v in fields.items()),
                             timeout, f"{event} {fields}")

    def count(self, event: str, **fields) -> int:
        return sum(1 for e in self.events() if e.get("event") == event and all(e.get(k) == v for k, v in fields.items()))

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 15.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"pysup did not exit within {timeout} s:\n{self.stderr()[-3000:]}") from None


class UpEnv:
    """A tmp state and runtime dir, a unique project; `assert_clean` (after every test): nothing
    of the project remains (processes, cgroups, mounts, runtime files, its bridges and veths, its
    nftables table; every stack is on a bridge network now, the implicit `default` one at least)."""

    def __init__(self, tmp: Path, rootfs: str):
        self.tmp = tmp
        self.rootfs = rootfs
        self.project = f"uptest-{uuid.uuid4().hex[:8]}"
        self.env = dict(os.environ, PYSUP_STATE_DIR=str(tmp / "state"), PYSUP_RUNTIME_DIR=str(tmp / "run"),
                        PYTHONPATH=str(REPO))
        self.ups: list[Up] = []

    def write(self, text: str) -> Path:
        body = textwrap.dedent(text).replace("ROOTFS", self.rootfs)
        f = self.tmp / "compose.yaml"
        f.write_text(f"name: {self.project}\n" + body)
        return f

    def up(self, text: str | None = None, *args: str) -> Up:
        compose = self.write(text) if text is not None else self.tmp / "compose.yaml"
        u = Up(self.env, self.tmp, self.project, compose, args)
        self.ups.append(u)
        return u

    # --- what must not remain ------------------------------------------------------------------

    def processes(self) -> list[str]:
        """Processes whose command line or cgroup names the project."""
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid() or not alive(int(pid)):
                continue
            try:
                cg = Path(f"/proc/{pid}/cgroup").read_text()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if self.project in cg or (str(self.tmp) in cmd and "pytest" not in cmd):
                found.append(f"{pid}: {cmd}")
        return found

    def cgroups(self) -> list[str]:
        out = subprocess.run(["find", "/sys/fs/cgroup", "-name", f"*{self.project}*"], capture_output=True,
                             text=True).stdout
        return out.split()

    def mounts(self) -> list[str]:
        return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(self.tmp) in line]

    def runtime_files(self) -> list[str]:
        leftovers = []
        for root in (self.tmp / "run",):
            for dirpath, dirnames, filenames in os.walk(root):
                if dirpath.startswith(str(root / "seccomp")):  # the filter cache may stay
                    continue
                leftovers += [os.path.join(dirpath, f) for f in filenames]
                leftovers += [os.path.join(dirpath, d) for d in dirnames
                              if d not in ("containers", "seccomp") and not os.path.join(dirpath, d).startswith(
                                  str(self.tmp / "run" / "seccomp"))]
        state = self.tmp / "state" / "projects" / self.project
        if (state / "run.json").exists():
            leftovers.append(str(state / "run.json"))
        return leftovers

    def links(self) -> set[str]:
        """The pysup links that are this test's: its project's bridges and its containers' veths
        (by their names; other pysup runs may be going on at the same time)."""
        import yaml

        from supervisor.net.bridge import bridge_name, veth_names

        try:
            doc = yaml.safe_load((self.tmp / "compose.yaml").read_text()) or {}
        except FileNotFoundError:
            return set()
        keys = set(doc.get("networks") or {}) | {"default"}
        names = {bridge_name(self.project, k) for k in keys}
        for svc in doc.get("services") or {}:
            for i in range(1, 11):
                for gen in ("", "-r1", "-r2", "-r3"):  # a rolling update's replacements
                    for k in keys:
                        names.update(veth_names(f"{self.project}-{svc}-{i}{gen}", k))
        out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ": pysup" in line} & names

    def tables(self) -> set[str]:
        """This test's project's nftables table, if it is there."""
        if not shutil.which("nft"):
            return set()
        out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
        return {line.split()[-1] for line in out.splitlines()} & {f"pysup-{self.project}"}

    def assert_clean(self) -> None:
        deadline = time.monotonic() + 3
        while True:
            left = {"processes": self.processes(), "cgroups": self.cgroups(), "mounts": self.mounts(),
                    "files": self.runtime_files(), "links": self.links(), "nft tables": self.tables()}
            if not any(left.values()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"left behind: {left}")
            time.sleep(0.1)


@contextlib.contextmanager
def running_env(workdir: Path, rootfs: str):
    """An UpEnv in `workdir`; afterwards every `pysup up` of it is stopped (SIGINT, then SIGKILL
    after 15 s) and nothing of its project may remain."""
    e = UpEnv(workdir, rootfs)
    try:
        yield e
    finally:
        for u in e.ups:
            if u.proc.poll() is None:
                u.proc.send_signal(signal.SIGINT)
                try:
                    u.proc.wait(15)
                except subprocess.TimeoutExpired:
                    u.proc.kill()
                    u.proc.wait()
    e.assert_clean()


@pytest.fixture
def up_env(tmp_path, rootfs):
    with running_env(tmp_path, rootfs) as e:
        yield e


@pytest.fixture
def userns_env(rootfs):
    """up_env for user namespaces: a directory 0755 all the way (not pytest's 0700 tmp_path), so
    a user namespace's root reaches its own state directory through it."""
    d = Path(tempfile.mkdtemp(prefix="pysup-test-userns-"))
    os.chmod(d, 0o755)
    try:
        with running_env(d, rootfs) as e:
            yield e
    finally:
        shutil.rmtree(d, ignore_errors=True)
