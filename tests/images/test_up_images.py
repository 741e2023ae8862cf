"""`pysup up` with images pulled from the loopback registry: the image's HEALTHCHECK makes replicas
healthy or unhealthy (and satisfies `service_healthy`), `disable: true` turns it off; the image's
STOPSIGNAL stops a service without `stop_signal` (compose's key wins); a live edit that adds a
service or changes an image pulls it first, without holding up the rest of the edit, and a failed
pull names the image and the service and keeps the running state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from integration.conftest import UpEnv
from ocitools import make_oci_layout, tar_bytes, tar_of_dir

pytestmark = pytest.mark.root

MS = 1_000_000  # the image config's durations are nanoseconds


@pytest.fixture(scope="module")
def images(registry, shared_busybox_rootfs, tmp_path_factory):
    """Images in the registry: `one` (HEALTHCHECK test -f /tmp/ok every 100 ms, 2 retries;
    STOPSIGNAL SIGUSR1), `two` (the same, plus /etc/which saying "two"), `three` (USER 65534,
    WORKDIR /home/app, an Entrypoint and Cmd printing them), `rt` (STOPSIGNAL SIGRTMIN+3, as
    systemd images have)."""
    d = tmp_path_factory.mktemp("pysup-test-up-images")
    base = tar_of_dir(shared_busybox_rootfs)
    config = {"Cmd": ["sh", "-c", "exec sleep 1000"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
              "StopSignal": "SIGUSR1",
              "Healthcheck": {"Test": ["CMD-SHELL", "test -f /tmp/ok"], "Interval": 100 * MS, "Retries": 2}}
    repo = f"t{uuid.uuid4().hex[:10]}"
    make_oci_layout(d / "one", [base], tag="1", config=config)
    make_oci_layout(d / "two", [base, tar_bytes([("etc/which", "f", "two\n")])], tag="2", config=config)
    make_oci_layout(d / "three", [base], tag="3", config={
        "Entrypoint": ["sh", "-c"], "Cmd": ["echo $(id -u) in $(pwd) with $V"], "User": "65534",
        "WorkingDir": "/home/app", "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "V=image"]})
    make_oci_layout(d / "rt", [base], tag="rt", config={**config, "StopSignal": "SIGRTMIN+3"})
    registry.push(d / "one", repo, "1")
    registry.push(d / "two", repo, "2")
    registry.push(d / "three", repo, "3")
    registry.push(d / "rt", repo, "rt")
    return f"{registry.host}/{repo}"


@pytest.fixture
def env(tmp_path, shared_busybox_rootfs):
    e = UpEnv(tmp_path, shared_busybox_rootfs)
    e.env.update(HOME=str(tmp_path), PYSUP_REGISTRIES=str(tmp_path / "none.yaml"))
    try:
        yield e
    finally:
        for u in e.ups:
            if u.proc.poll() is None:
                u.stop()
    e.assert_clean()


def health(u, container):
    return [e["status"] for e in u.events() if e.get("event") == "replica.health" and e.get("container") == container]


def test_the_images_healthcheck_is_honoured_and_disable_turns_it_off(env, images):
    p = env.project
    u = env.up(f"""
        x-quick: &quick {{stop_grace_period: 100ms}}  # sleep as PID 1 ignores the image's SIGUSR1
        services:
          ok:
            <<: *quick
            image: {images}:1
            command: ["sh", "-c", "touch /tmp/ok; exec sleep 1000"]
          failing:
            <<: *quick
            image: {images}:1
          disabled:
            <<: *quick
            image: {images}:1
            healthcheck: {{disable: true}}
          slower:  # its own retries, the image's test and interval
            <<: *quick
            image: {images}:1
            healthcheck: {{retries: 6}}
          after:
            <<: *quick
            image: {images}:1
            command: ["sh", "-c", "touch /tmp/ok; exec sleep 1000"]
            depends_on: {{ok: {{condition: service_healthy}}}}
    """)
    u.wait_event("replica.health", container=f"{p}-ok-1", status="healthy")
    u.wait_event("replica.started", container=f"{p}-after-1")  # the image's check satisfies service_healthy
    ev = u.wait_event("replica.health", container=f"{p}-failing-1", status="unhealthy")
    assert ev["failing_streak"] == 2, ev  # the image's Retries
    ev = u.wait_event("replica.health", container=f"{p}-slower-1", status="unhealthy")
    assert ev["failing_streak"] == 6, ev
    assert health(u, f"{p}-disabled-1") == []  # it would have failed as soon as `failing`
    assert u.stop() == 0


def test_the_images_stop_signal_stops_a_service_without_stop_signal(env, images):
    p = env.project
    trap = "trap 'echo {0} caught; exit 0' {0}; sleep 1000 & wait"
    u = env.up(f"""
        services:
          image-signal:
            image: {images}:1
            command: ["sh", "-c", "{trap.format('USR1')}"]
            healthcheck: {{disable: true}}
            stop_grace_period: 20s
          own-signal:
            image: {images}:1
            command: ["sh", "-c", "{trap.format('QUIT')}"]
            healthcheck: {{disable: true}}
            stop_signal: SIGQUIT
            stop_grace_period: 20s
          realtime:  # the image's STOPSIGNAL SIGRTMIN+3 is signal 37 (glibc's SIGRTMIN is 34)
            image: {images}:rt
            command: ["sh", "-c", "trap 'echo RTMIN+3 caught; exit 0' 37; sleep 1000 & wait"]
            healthcheck: {{disable: true}}
            stop_grace_period: 5s  # SIGTERM (ignored by the trap) would end in a SIGKILL, not a hung test
    """)
    for s in ("image-signal", "own-signal", "realtime"):
        u.wait_event("replica.started", container=f"{p}-{s}-1")
    time.sleep(0.3)  # the shells have set their traps
    t0 = time.monotonic()
    assert u.stop() == 0
    assert time.monotonic() - t0 < 15  # neither waited out its grace period
    stops = {e["container"]: e["signal"] for e in u.events() if e.get("event") == "replica.stopping"}
    assert stops == {f"{p}-image-signal-1": "SIGUSR1", f"{p}-own-signal-1": "SIGQUIT",
                     f"{p}-realtime-1": "SIGRTMIN+3"}, stops
    assert u.count("replica.killing") == 0
    assert all(f"{s} caught" in u.stdout() for s in ("USR1", "QUIT", "RTMIN+3")), u.stdout()


def until(u, pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if u.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no {what}:\n{u.stderr()[-3000:]}\n{u.stdout()[-1000:]}")
        time.sleep(0.05)


def save(env, text):
    tmp = env.tmp / ".compose.yaml.tmp"
    tmp.write_text(f"name: {env.project}\n" + text.replace("ROOTFS", env.rootfs))
    os.rename(tmp, env.tmp / "compose.yaml")


def test_a_live_edit_pulls_a_new_image_first_and_a_failed_pull_keeps_the_running_state(env, images):
    p = env.project
    keep = """
  keep:
    x-pysup: {{rootfs: ROOTFS}}
    command: ["sh", "-c", "echo keep {v}; exec sleep 1000"]
    stop_grace_period: 100ms
"""
    y = """
  y:
    image: {image}
    command: ["sh", "-c", "cat /etc/which 2>/dev/null || echo one; exec sleep 1000"]
    healthcheck: {{disable: true}}
    stop_grace_period: 100ms
"""
    u = env.up("services:" + keep.format(v=1).replace("ROOTFS", env.rootfs) + y.format(image=f"{images}:1"))
    first_y = u.wait_event("replica.started", container=f"{p}-y-1")["pid"]
    # an added service whose image the registry does not have: the rest of the edit applies, the
    # failure names the image and the service, and nothing else changes
    missing = f"{images.rpartition('/')[0]}/pysup-nosuch-{uuid.uuid4().hex[:6]}:1"
    save(env, "services:" + keep.format(v=2) + y.format(image=f"{images}:1")
         + f"  x:\n    image: {missing}\n    command: [sleep, '1000']\n")
    ev = u.wait_event("image.pull_failed", image=missing)
    assert ev["services"] == ["x"] and "not found" in ev["error"], ev
    until(u, lambda: "keep 2" in u.stdout(), 20, "keep replaced")
    assert f"pysup: cannot pull image {missing} for service x: not found in registry" in u.stderr()
    assert u.count("replica.started", container=f"{p}-x-1") == 0
    # x's image fixed, and y's image changed: image 2 is pulled once, then x starts and y is replaced
    save(env, "services:" + keep.format(v=2) + y.format(image=f"{images}:2")
         + f"  x:\n    image: {images}:2\n    command: ['sh', '-c', 'echo x runs $(cat /etc/which); exec sleep 1000']\n"
           "    healthcheck: {disable: true}\n    stop_grace_period: 100ms\n")
    u.wait_event("replica.started", container=f"{p}-x-1", timeout=30)
    until(u, lambda: "x runs two" in u.stdout() and "| two\n" in u.stdout(), 20, "x and the new y on image 2")
    assert u.count("image.pulled", image=f"{images}:2") == 1
    pulled = next(i for i, e in enumerate(u.events()) if e.get("event") == "image.pulled")
    started = next(i for i, e in enumerate(u.events()) if e.get("event") == "replica.started"
                   and e.get("container") == f"{p}-x-1")
    assert pulled < started
    assert [e["pid"] for e in u.events() if e.get("event") == "replica.started"
            and e.get("container", "").startswith(f"{p}-y-1")][-1] != first_y
    assert u.stop() == 0


def test_up_with_an_image_it_cannot_pull_is_one_line_naming_service_and_image(env, images):
    missing = f"{images.rpartition('/')[0]}/pysup-nosuch-{uuid.uuid4().hex[:6]}:1"
    u = env.up(f"services:\n  web:\n    image: {missing}\n  other:\n    image: {images}:1\n    pull_policy: never\n")
    assert u.wait() != 0
    errors = [line for line in u.stderr().splitlines() if line.startswith("pysup:")]
    assert errors == [f"pysup: services.web: image {missing}: not found in registry "
                      f"{missing.partition('/')[0]} (manifest unknown)"], u.stderr()
    assert u.count("replica.started") == 0
    store = env.tmp / "state" / "images"
    assert not (store / "layers").exists() or os.listdir(store / "layers") == []
    assert not (store / "tmp").exists() or os.listdir(store / "tmp") == []


def test_the_images_user_workdir_env_and_cmd_under_the_compose_keys(env, images):
    u = env.up(f"""
        services:
          image:
            image: {images}:3
          compose:
            image: {images}:3
            user: "0"
            working_dir: /etc
            environment: {{V: compose}}
            command: ["echo $$(id -u) in $$(pwd) with $$V, still through the image entrypoint"]
    """, "--no-log-prefix")
    assert u.wait() == 0, u.stderr()
    assert sorted(u.stdout().splitlines()) == [
        "0 in /etc with compose, still through the image entrypoint", "65534 in /home/app with image"]
    r = subprocess.run([sys.executable, "-m", "supervisor", "run", "--rm", f"{images}:3"], capture_output=True,
                       text=True, env=env.env, cwd=env.tmp, timeout=60)
    assert (r.returncode, r.stdout) == (0, "65534 in /home/app with image\n"), r.stderr
    r = subprocess.run([sys.executable, "-m", "supervisor", "run", "--rm", "-u", "0", "-w", "/", "-e", "V=cli",
                        f"{images}:3"], capture_output=True, text=True, env=env.env, cwd=env.tmp, timeout=60)
    assert (r.returncode, r.stdout) == (0, "0 in / with cli\n"), r.stderr


class HeldRegistry:
    """A loopback "registry" that answers nothing until `release()`, then 404 to everything: a pull
    from it lasts as long as the test wants, then fails."""

    def __init__(self):
        import socketserver
        import threading

        released = self.released = threading.Event()

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                released.wait(60)
                try:
                    self.request.settimeout(5)
                    self.request.recv(65536)
                    self.request.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def release(self):
        self.released.set()

    def close(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def test_the_stack_does_not_end_while_an_edit_waits_for_an_image(env):
    """Every replica left has ended for good (the stack would be done), but the edit that removed
    the last running one also added a service whose image is being pulled: pysup waits for the
    pull; once it has failed, nothing is left to run and the stack ends."""
    held = HeldRegistry()
    try:
        done = """
  done:
    x-pysup: {rootfs: ROOTFS}
    command: ["true"]
"""
        u = env.up("services:" + done.replace("ROOTFS", env.rootfs) + """
  running:
    x-pysup: {rootfs: ROOTFS}
    command: ["sleep", "1000"]
    stop_grace_period: 100ms
""".replace("ROOTFS", env.rootfs))
        u.wait_event("replica.started", container=f"{env.project}-running-1")
        u.wait_event("replica.exited", container=f"{env.project}-done-1")
        save(env, "services:" + done + f"  late:\n    image: {held.host}/pysup-held:1\n    command: [sleep, '1000']\n")
        u.wait_event("reload.waiting_for_images", services=["late"])
        u.wait_event("replica.stopped", container=f"{env.project}-running-1")
        u.wait_event("reconcile.done")
        held.release()
        u.wait_event("image.pull_failed", image=f"{held.host}/pysup-held:1", timeout=30)
        assert u.wait(30) == 0
        events = [e.get("event") for e in u.events()]
        assert events.index("image.pull_failed") < events.index("up.all_exited"), events
    finally:
        held.close()


def test_an_edit_to_pull_policy_pulls_the_missing_image_of_an_unchanged_image(env, images):
    """`pull_policy: never` with the image not in the store: the service cannot start. Saving it
    with `pull_policy: missing` (its image: unchanged) pulls the image, then starts it."""
    p = env.project
    keep = """
  keep:
    x-pysup: {rootfs: ROOTFS}
    command: ["sleep", "1000"]
    stop_grace_period: 100ms
"""
    web = """
  web:
    image: IMAGE
    pull_policy: POLICY
    command: ["sh", "-c", "echo web runs; exec sleep 1000"]
    healthcheck: {disable: true}
    stop_grace_period: 100ms
""".replace("IMAGE", f"{images}:2")
    u = env.up("services:" + keep.replace("ROOTFS", env.rootfs) + web.replace("POLICY", "never"))
    u.wait_event("replica.started", container=f"{p}-keep-1")
    u.wait_event("replica.start_failed", container=f"{p}-web-1")
    save(env, "services:" + keep + web.replace("POLICY", "missing"))
    u.wait_event("image.pulled", image=f"{images}:2", timeout=30)
    until(u, lambda: "web runs" in u.stdout(), 20, "web started")
    assert u.stop() == 0
