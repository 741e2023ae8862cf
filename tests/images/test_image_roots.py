"""Where a container's root comes from: `x-pysup.rootfs`, an image of the local store (one layer
or several, stacked with overlayfs), or `image: host`. Plans as data, then real containers (root)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import trio

from supervisor.config.load import load
from supervisor.config.model import Mount, Service, ServiceExtras
from supervisor.images.store import ImageStore, ImageStoreError
from supervisor.runtime import rootfs as R
from supervisor.runtime.spec import ContainerSpec, ExecSpec, UnknownImage, UnsupportedOption, from_service

REPO = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0


def can_run() -> str | None:
    if not IS_ROOT:
        return "needs root"
    if not os.path.exists("/bin/busybox"):
        return "needs /bin/busybox (busybox-static)"
    return None


needs_root = pytest.mark.skipif(can_run() is not None, reason=str(can_run()))


def new_id() -> str:
    return f"pysup-test-{uuid.uuid4().hex[:12]}"


# --- resolution (no root needed) -----------------------------------------------------------------


def test_unknown_image_is_one_line_naming_service_and_image(tmp):
    store = ImageStore(str(tmp / "images"))
    with pytest.raises(UnknownImage) as e:
        from_service(Service(name="web", image="shop/web:2", command=("true",)), id="x", images=store)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("services.web: image shop/web:2 is not in the local store")
    assert "pysup image import shop/web:2" in msg


def test_rootfs_before_image(tmp):
    store = ImageStore(str(tmp / "images"))
    svc = Service(name="s", image="not-there", command=("true",), x=ServiceExtras(rootfs="/roots/s"))
    assert from_service(svc, id="x", images=store).rootfs == "/roots/s"
    with pytest.raises(UnsupportedOption, match="no image and no x-pysup.rootfs"):
        from_service(Service(name="s", command=("true",)), id="x")


def test_an_image_of_the_store_is_its_layers(tmp):
    src = tmp / "src"
    (src / "bin").mkdir(parents=True)
    store = ImageStore(str(tmp / "images"))
    image = store.import_path("app:1", str(src))
    spec = from_service(Service(name="s", image="app:1", command=("true",)), id="x", images=store)
    assert spec.rootfs == store.layer_path(image.layers[0]) and spec.lower_layers == ()
    assert spec.writable_layer and not spec.read_only


def test_image_host_is_a_read_only_view_with_private_tmp():
    stack = load([str(REPO / "examples/compose/demo.yaml")]).stack
    for name, svc in stack.services.items():
        spec = from_service(svc, id=f"pysup-test-{name}")
        assert spec.rootfs == "/" and spec.read_only and not spec.writable_layer
        assert [(m.type, m.target) for m in spec.mounts] == [("tmpfs", "/tmp"), ("tmpfs", "/var/tmp"), ("tmpfs", "/run")]
    own = Service(name="s", image="host", command=("true",), volumes=(Mount(type="bind", source="/srv", target="/tmp"),))
    assert [m.target for m in from_service(own, id="x").mounts] == ["/tmp", "/var/tmp", "/run"]
    assert from_service(own, id="x").mounts[0].type == "bind"


def test_layer_and_host_plans():
    opts = dict(generated_files=(), masked_paths=(), readonly_paths=())
    plan = R.plan_rootfs(R.RootfsOptions(rootfs="/l/top", lower_layers=("/l/mid", "/l/base"), layer_dir="/s/layer",
                                         mount_dir="/s/root", **opts))
    assert plan.overlay.data == "lowerdir=/l/top:/l/mid:/l/base,upperdir=/s/layer/upper,workdir=/s/layer/work"
    ro = R.plan_rootfs(R.RootfsOptions(rootfs="/l/top", lower_layers=("/l/base",), read_only=True, mount_dir="/s/root",
                                       **opts))
    assert (ro.overlay.data, ro.rootfs) == ("lowerdir=/l/top:/l/base", "/s/root")
    host = R.plan_rootfs(R.RootfsOptions(rootfs="/", read_only=True, host_view=True, mount_dir="/s/root", **opts))
    assert host.host_view and host.rootfs == "/s/root" and host.overlay is None
    with pytest.raises(R.MountPlanError, match="read-only"):
        R.plan_rootfs(R.RootfsOptions(rootfs="/", host_view=True, mount_dir="/s/root", **opts))
    with pytest.raises(R.MountPlanError, match="':'"):
        R.plan_rootfs(R.RootfsOptions(rootfs="/a:b", lower_layers=("/c",), mount_dir="/s/root", **opts))


def test_host_view_is_bound_recursively_and_made_read_only_before_anything_else():
    from supervisor.syscalls import MOUNT_ATTR_RDONLY, RecordingSyscalls

    plan = R.plan_rootfs(R.RootfsOptions(rootfs="/", read_only=True, host_view=True, mount_dir="/s/root",
                                         masked_paths=(), readonly_paths=()))
    sc = RecordingSyscalls()
    R.prepare_root(sc, plan.rootfs, plan.overlay, plan.host_view)
    assert sc.calls[1:5] == [("mkdir", "/s/root", 0o755), ("mount", "/", "/s/root", None, R.S.MS_BIND | R.S.MS_REC, None),
                             ("mount", None, "/s/root", None, R.S.MS_PRIVATE | R.S.MS_REC, None),
                             ("mount_setattr", "/s/root", MOUNT_ATTR_RDONLY, 0, True)]


# --- real containers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rootfs(shared_busybox_rootfs):
    if can_run() is not None:
        pytest.skip(str(can_run()))
    return shared_busybox_rootfs


@pytest.fixture
def env(tmp):
    e = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "PYSUP_STATE_DIR": str(tmp / "state"),
         "PYSUP_RUNTIME_DIR": str(tmp / "run")}
    yield e
    containers = tmp / "run" / "containers"
    assert not containers.exists() or os.listdir(containers) == []
    with open("/proc/self/mountinfo") as f:
        assert [line for line in f if "pysup-test-" in line] == []


def pysup(env, *args, stdin=None):
    return subprocess.run([sys.executable, "-m", "supervisor", *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=str(REPO), input=stdin)


@needs_root
def test_run_an_imported_image_with_a_writable_layer(env, rootfs):
    ref = f"{new_id()}:v1"
    assert pysup(env, "image", "import", ref, rootfs).returncode == 0
    r = pysup(env, "run", "--rm", ref, "--", "/bin/sh", "-c", "echo changed > /etc/motd; cat /etc/motd; ls /bin/busybox")
    assert (r.returncode, r.stdout) == (0, "changed\n/bin/busybox\n"), r.stderr
    layer = ImageStore(os.path.join(env["PYSUP_STATE_DIR"], "images")).layers(ref)[0]
    assert not os.path.exists(os.path.join(layer, "etc/motd")), "the image layer was written"
    r = pysup(env, "run", ref.split(":")[0] + ":nope", "/bin/true")
    assert r.returncode == 125 and "not in the local store" in r.stderr and r.stderr.count("\n") == 1


@needs_root
def test_an_image_of_several_layers_is_stacked(env, rootfs, tmp):
    """Two layers (as a registry pull will make): the top one shadows the base."""
    store = ImageStore(os.path.join(env["PYSUP_STATE_DIR"], "images"))
    base = store.import_path("pysup-test-base", rootfs)
    top_src = tmp / "top"
    (top_src / "etc").mkdir(parents=True)
    (top_src / "etc" / "release").write_text("top layer\n")
    (top_src / "etc" / "group").write_text("root:x:0:\n")
    top = store.import_path("pysup-test-top", str(top_src))
    data = json.loads(Path(store.index_path).read_text())
    data["images"]["pysup-test-stack:latest"] = {**data["images"]["pysup-test-base:latest"],
                                                 "layers": [top.layers[0], base.layers[0]]}
    Path(store.index_path).write_text(json.dumps(data))
    for extra in ((), ("--read-only",)):
        r = pysup(env, "run", "--rm", *extra, "pysup-test-stack", "/bin/sh", "-c",
                  "cat /etc/release; cat /etc/group; ls /bin/busybox; touch /x 2>/dev/null && echo rw || echo ro")
        assert r.stdout == f"top layer\nroot:x:0:\n/bin/busybox\n{'ro' if extra else 'rw'}\n", r.stderr


@needs_root
@pytest.mark.parametrize("key, value, want", [
    ("Entrypoint", {"sh": "-c"}, "a list of strings"),
    ("Cmd", ["echo", 1], "a list of strings"),
    ("Env", "PATH=/bin", 'a list of "NAME=value" strings'),
    ("WorkingDir", ["/srv"], "a string"),
    ("User", 65534, "a string"),
    ("ExposedPorts", ["80/tcp"], 'an object like {"80/tcp": {}}'),
])
def test_a_malformed_image_config_is_one_line_naming_the_image(env, rootfs, tmp, key, value, want):
    """An image config stored with a key of the wrong type (by an older pysup, a hand edit: pulls
    and loads refuse it now) fails `pysup run IMAGE` and `pysup up` with one line naming the
    image and the key, before anything starts: never a traceback, never a half-applied config."""
    ref = f"{new_id()}:v1"
    store = ImageStore(os.path.join(env["PYSUP_STATE_DIR"], "images"))
    store.import_path(ref, rootfs)
    data = json.loads(Path(store.index_path).read_text())
    data["images"][ref]["config"] = {"Env": ["PATH=/bin"], key: value}
    Path(store.index_path).write_text(json.dumps(data))
    problem = f"image {ref}: its config's {key} is not {want} ({json.dumps(value)}); fix or rebuild the image"

    r = pysup(env, "run", "--rm", ref, "/bin/true")
    assert (r.returncode, r.stderr) == (125, f"pysup: {problem}\n")
    r = pysup(env, "run", "--rm", ref)  # the image's Cmd, too
    assert (r.returncode, r.stderr) == (125, f"pysup: {problem}\n")

    spec = tmp / "compose.yaml"
    spec.write_text(f"name: {new_id()}\nservices:\n  app:\n    image: {ref}\n    command: [/bin/true]\n")
    r = pysup(env, "--log-format", "json", "-f", str(spec), "up")
    assert (r.returncode, r.stderr.splitlines()[-1:]) == (1, [f"pysup: services.app: {problem}"]), r.stderr
    assert "Traceback" not in r.stderr and "replica.started" not in r.stderr + r.stdout
    # pulls and loads refuse such a config (as the engine does) rather than storing it
    with pytest.raises(ImageStoreError, match=f"^image pysup-test-x:1: its config's {key} is not "):
        store.add_image("pysup-test-x", "1", layers=[], config={key: value}, digest=None, source="t")
    assert store.find("pysup-test-x:1") is None


def test_an_entrypoint_or_cmd_string_is_one_argument_as_moby_reads_it(tmp):
    from supervisor.images.config import checked_config

    config = {"Entrypoint": "/entry.sh", "Cmd": "serve", "Env": None, "ExposedPorts": {"80/tcp": None}}
    assert checked_config("x", config) == {**config, "Entrypoint": ["/entry.sh"], "Cmd": ["serve"]}
    assert config["Entrypoint"] == "/entry.sh"  # the store's (cached) copy is left alone
    store = ImageStore(str(tmp / "images"))
    (tmp / "src").mkdir()
    store.import_path("app:1", str(tmp / "src"))
    data = json.loads(Path(store.index_path).read_text())
    data["images"]["app:1"]["config"] = config
    Path(store.index_path).write_text(json.dumps(data))
    spec = from_service(Service(name="s", image="app:1"), id="x", images=store)
    assert spec.argv == ("/entry.sh", "serve")


def test_a_live_edit_with_a_malformed_image_config_fails_that_start_only(tmp):
    """The live-edit gate's `effective_stack` reads only StopSignal and Healthcheck and does not
    raise (it runs on the supervisor's loop); the replica's start then fails with the one line
    (`replica.start_failed`: a PysupError), as for an image missing from the store."""
    from supervisor.config.model import Stack
    from supervisor.errors import PysupError
    from supervisor.images.config import ImageConfigError, effective_stack

    store = ImageStore(str(tmp / "images"))
    (tmp / "src").mkdir()
    store.import_path("app:1", str(tmp / "src"))
    data = json.loads(Path(store.index_path).read_text())
    data["images"]["app:1"]["config"] = {"Cmd": 5, "StopSignal": "SIGQUIT"}
    Path(store.index_path).write_text(json.dumps(data))
    stack = Stack(name="p", project_dir="/", files=(), services={"s": Service(name="s", image="app:1")})
    assert effective_stack(stack, store).services["s"].stop_signal == 3
    with pytest.raises(ImageConfigError, match=r"^services\.s: image app:1: its config's Cmd is not a list"):
        effective_stack(stack, store, check=True)
    with pytest.raises(PysupError, match=r"^image app:1: its config's Cmd is not a list of strings \(5\)"):
        from_service(stack.services["s"], id="x", images=store)


@needs_root
def test_image_host_takes_no_host_mount_made_after_it_started(env, tmp):
    """The view is a private copy: a mount the host makes later under a shared mount (systemd
    makes / shared) does not propagate into it, where it would not even be read-only."""
    shared = Path(tempfile.mkdtemp(prefix=".pysup-test-shared-", dir=REPO))  # not under /tmp: the view replaces it
    sub = shared / "sub"
    sub.mkdir()
    mounted: list[Path] = []
    try:
        subprocess.run(["mount", "--bind", str(shared), str(shared)], check=True)
        mounted.append(shared)
        subprocess.run(["mount", "--make-shared", str(shared)], check=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run", "--rm", "host", "--", "/bin/sh", "-c",
             f"echo up; while [ ! -e {shared}/ready ]; do sleep 0.02; done; "
             f"grep -q ' {sub} ' /proc/self/mountinfo && echo propagated || echo private; "
             f"touch {sub}/x 2>/dev/null && echo wrote; true"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))
        try:
            assert proc.stdout.readline() == "up\n", proc.stderr.read()
            subprocess.run(["mount", "-t", "tmpfs", "pysup-test-tmpfs", str(sub)], check=True)
            mounted.append(sub)
            (shared / "ready").touch()
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err
        assert out.splitlines() == ["private"], (out, err)
        assert not (sub / "x").exists()
    finally:
        for m in reversed(mounted):
            subprocess.run(["umount", str(m)], check=False)
        shutil.rmtree(shared, ignore_errors=True)


@needs_root
def test_image_host_from_the_cli(env, tmp):
    marker = Path(tempfile.mkdtemp(prefix="pysup-test-hosttmp-", dir="/tmp"))
    try:
        r = pysup(env, "run", "--rm", "host", "--", "/bin/sh", "-c",
                  f"cat /etc/hostname >/dev/null; touch /etc/pysup-test-x 2>/dev/null && echo etc-rw; "
                  f"touch {tmp}/pysup-test-y 2>/dev/null && echo work-rw; ls -d {marker} 2>/dev/null && echo host-tmp; "
                  "echo t > /tmp/t && echo > /var/tmp/v && echo > /run/r && echo private-rw; "
                  "stat -c %a /tmp; id -u; cat /etc/os-release | head -1")
        assert r.returncode == 0, r.stderr
        with open("/etc/os-release") as f:
            first = f.readline()
        assert r.stdout.splitlines() == ["private-rw", "1777", "0", first.rstrip("\n")]
        assert not os.path.exists("/etc/pysup-test-x") and not (tmp / "pysup-test-y").exists()
    finally:
        shutil.rmtree(marker, ignore_errors=True)


@needs_root
async def test_the_demo_stack_starts_with_from_service(tmp):
    """The demo's `db` (image: host) starts from `from_service` and its health check passes."""
    from supervisor.runtime.launcher import open_runtime

    stack = load([str(REPO / "examples/compose/demo.yaml")]).stack
    db = stack.services["db"]
    spec = from_service(db, id=new_id())
    state = tempfile.mkdtemp(prefix="pysup-test-state-")
    try:
        async with open_runtime(state_root=state) as rt:
            with trio.fail_after(20):
                async with trio.open_nursery() as n:
                    c = await n.start(lambda task_status: rt.start(spec, stdout="null", stderr="null",
                                                                   task_status=task_status))
                    for _ in range(50):
                        probe = ExecSpec.for_container(spec, c.pid, db.healthcheck.test[1:], id=new_id())
                        h = await n.start(lambda task_status: rt.exec(c, probe, stdout="null", stderr="null",
                                                                      task_status=task_status))
                        if (await h.wait()).exit_code == 0:
                            break
                        await trio.sleep(0.1)
                    else:
                        raise AssertionError("the health check never passed")
                    c.kill()
                    await c.wait()
                    await c.aclose()
        assert os.listdir(state) == []
    finally:
        shutil.rmtree(state, ignore_errors=True)


@needs_root
async def test_a_user_namespace_sees_the_image_through_idmapped_layers(tmp, rootfs):
    """Through the zygote (the supervisor's path): a two-layer image, idmapped, writable layer."""
    from supervisor.runtime.launcher import open_runtime
    from supervisor.runtime.security import resolve_capabilities

    top = tmp / "top"
    (top / "etc").mkdir(parents=True)
    (top / "etc" / "release").write_text("top\n")
    os.chmod(tmp, 0o755)
    spec = ContainerSpec(id=new_id(), rootfs=str(top), lower_layers=(rootfs,), uid_map=((0, 1_900_000_000, 65536),),
                         idmap=True, capabilities=resolve_capabilities(),
                         argv=("/bin/sh", "-c", "cat /proc/self/uid_map; stat -c %u /bin/busybox /etc/release; "
                               "cat /etc/release; echo new >> /etc/release && echo >> /etc/group && echo written"))
    state = tempfile.mkdtemp(prefix="pysup-test-state-")
    out: list[bytes] = []
    try:
        async with open_runtime(state_root=state) as rt:
            with trio.fail_after(20):
                async with trio.open_nursery() as n:
                    c = await n.start(lambda task_status: rt.start(spec, stderr="null", task_status=task_status))
                    async for chunk in c.stdout:
                        out.append(chunk)
                    status = await c.wait()
                    await c.aclose()
        assert os.listdir(state) == []
    finally:
        shutil.rmtree(state, ignore_errors=True)
    lines = b"".join(out).decode().split()
    assert status.exit_code == 0, lines
    assert lines == ["0", "1900000000", "65536", "0", "0", "top", "written"]
    assert (top / "etc" / "release").read_text() == "top\n" and "\n\n" not in Path(rootfs, "etc/group").read_text()
