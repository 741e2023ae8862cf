"""Every example stack in examples/compose loads cleanly, and means what its comments say.

The examples are documentation people copy from, so each one must load with no errors and with
no warnings except the ones it triggers on purpose (listed in EXPECTED_WARNINGS). A new example
file is picked up by the glob and held to the same rule. Loads use an empty shell environment,
so only the files themselves (and their `.env`) decide the result.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config.load import Loaded, load
from supervisor.config.model import Stack
from supervisor.errors import SpecError, format_path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "compose"

# Single files: every *.yaml directly in examples/compose, plus extends' base file (a complete
# compose file of its own). Directories are projects: loaded by default file discovery.
FILES = sorted(EXAMPLES.glob("*.yaml")) + [EXAMPLES / "extends" / "base" / "common.yaml"]
PROJECTS = [EXAMPLES / "extends", EXAMPLES / "multi"]

# Warnings an example triggers on purpose, by key path.
EXPECTED_WARNINGS: dict[str, set[str]] = {
    "limits.yaml": {
        *(f"services.engine-only.{key}"
          for key in ("shm_size", "oom_score_adj", "mem_swappiness", "cpu_period", "cpu_quota")),
        # I/O throttling is planned: accepted, warned about, not applied yet.
        "services.classic.blkio_config.device_read_bps",
        "services.classic.blkio_config.device_write_iops",
    },
}


def _rel(path: Path) -> str:
    return str(path.relative_to(EXAMPLES))


def load_file(path: Path, **kw) -> Loaded:
    return load([str(path)], environ=kw.pop("environ", {}), **kw)


def load_project(directory: Path, **kw) -> Loaded:
    return load(None, cwd=str(directory), environ=kw.pop("environ", {}), **kw)


def _load(target: Path) -> Loaded:
    try:
        return load_project(target) if target.is_dir() else load_file(target)
    except SpecError as exc:  # show every problem, not pytest's truncated repr
        pytest.fail(f"{_rel(target)} does not load:\n{exc}")


@pytest.mark.parametrize("target", FILES + PROJECTS, ids=_rel)
def test_example_loads_with_only_expected_warnings(target: Path) -> None:
    loaded = _load(target)
    assert loaded.stack.services, "an example with no services shows nothing"
    found = {format_path(w.path) for w in loaded.warnings}
    expected = EXPECTED_WARNINGS.get(_rel(target), set())
    assert found == expected, "\n".join(str(w) for w in loaded.warnings)
    # Every warning points at the line to edit.
    assert all(w.location is not None for w in loaded.warnings)


@pytest.mark.parametrize("path", FILES + [p / "compose.yaml" for p in PROJECTS], ids=_rel)
def test_example_starts_with_a_comment(path: Path) -> None:
    first = path.read_text(encoding="utf-8").lstrip().splitlines()[0]
    assert first.startswith("#"), f"{_rel(path)} should say what it shows in a comment at the top"


def test_examples_are_found() -> None:
    names = {p.name for p in FILES}
    assert {"webapp.yaml", "healthcheck.yaml", "restart.yaml", "scale.yaml", "limits.yaml",
            "profiles.yaml", "hooks.yaml", "demo.yaml"} <= names


# --- what the examples say they do ---------------------------------------------------------------


def stack_of(name: str, **kw) -> Stack:
    return load_file(EXAMPLES / name, **kw).stack


def test_webapp() -> None:
    stack = stack_of("webapp.yaml")
    web, api, db = (stack.services[n] for n in ("web", "api", "db"))
    assert stack.name == "webapp"
    # Two replicas share the fixed published ports: not an error in pysup.
    assert web.replicas == 2
    assert [(p.target, p.published, p.host_ip) for p in web.ports] == [
        (80, (8080, 8080), None), (443, (8443, 8443), "127.0.0.1")]
    assert web.resources.memory == 64 * 2**20 and web.resources.cpus == 0.5 and web.resources.pids == 64
    assert [(d.service, d.condition, d.restart) for d in web.depends_on] == [("api", "service_healthy", True)]
    # env_file values, with `environment` winning and its default applying (no LOG_LEVEL in the shell).
    assert api.environment["APP_ENV"] == "production"
    assert api.environment["GREETING"] == "hello from the api"
    assert api.environment["LOG_LEVEL"] == "debug"
    assert api.env_files == (str(EXAMPLES / "webapp.env"),)
    assert {d.service: d.condition for d in api.depends_on} == {
        "db": "service_healthy", "cache": "service_started"}
    assert api.healthcheck is not None and api.healthcheck.start_interval == 1.0
    assert api.restart.condition == "on-failure" and api.restart.max_attempts == 5
    assert [(m.type, m.source, m.read_only) for m in api.volumes] == [
        ("volume", "uploads", False), ("bind", str(EXAMPLES / "configs"), True)]
    assert db.secrets[0].target == "/run/secrets/db_password" and db.secrets[0].mode == 0o400
    assert db.stop_signal == 2  # SIGINT
    assert stack.secrets["db_password"].file == str(EXAMPLES / "secrets" / "db_password.txt")
    assert Path(stack.secrets["db_password"].file).is_file()
    assert stack.networks["backend"].internal
    assert set(stack.volumes) == {"db-data", "uploads"}


def test_webapp_shell_wins_over_defaults() -> None:
    api = stack_of("webapp.yaml", environ={"LOG_LEVEL": "warning"}).services["api"]
    assert api.environment["LOG_LEVEL"] == "warning"


def test_healthcheck_forms() -> None:
    services = stack_of("healthcheck.yaml").services
    assert services["ready-file"].healthcheck.test == ("CMD", "test", "-f", "/tmp/ready")
    assert services["shell-list"].healthcheck.test[0] == "CMD-SHELL"
    shell = services["shell-string"].healthcheck
    assert shell.test == ("CMD-SHELL", "test -d /proc/self")
    # timings not given stay unset (the image's, else Docker's defaults)
    assert (shell.interval, shell.timeout, shell.retries, shell.start_period, shell.start_interval) == (
        None, None, None, None, None)
    d = shell.with_defaults()
    assert (d.interval, d.timeout, d.retries, d.start_period, d.start_interval) == (30.0, 30.0, 3, 0.0, 5.0)
    # disabled (a NONE test, `disable: true`) is not "no healthcheck key" (the image's)
    assert services["no-check-none"].healthcheck.disabled
    assert services["no-check-disable"].healthcheck.disabled
    assert services["degrades"].x.restart_on_unhealthy is False
    assert services["ready-file"].x.restart_on_unhealthy is True
    assert "$(( $(date" in services["degrades"].healthcheck.test[1]  # $$ became a literal $


def test_restart_policies() -> None:
    stack = stack_of("restart.yaml")
    policy = {name: (s.restart.condition, s.restart.max_attempts) for name, s in stack.services.items()}
    assert policy["never"] == ("no", None)  # `restart: no` unquoted is the string "no"
    assert policy["always"] == ("always", None)
    assert policy["on-failure"] == ("on-failure", None)
    assert policy["on-failure-3"] == ("on-failure", 3)
    assert policy["unless-stopped"] == ("unless-stopped", None)
    assert policy["deploy-none"] == ("no", None)
    assert policy["deploy-any"] == ("always", None)
    deploy = stack.services["deploy-on-failure"].restart
    assert (deploy.condition, deploy.max_attempts, deploy.delay, deploy.window) == ("on-failure", 5, 5.0, 120.0)
    assert (stack.x.backoff.base, stack.x.backoff.cap, stack.x.backoff.reset_after) == (0.2, 30.0, 60.0)
    own = stack.backoff_for(stack.services["unless-stopped"])
    assert (own.base, own.cap, own.reset_after) == (1.0, 10.0, 30.0)
    assert stack.backoff_for(stack.services["always"]) == stack.x.backoff
    migrated = stack.services["migrated"].depends_on
    assert [(d.service, d.condition) for d in migrated] == [("migrate", "service_completed_successfully")]


def test_scale() -> None:
    services = stack_of("scale.yaml").services
    assert services["web"].replicas == 3
    assert services["web"].ports[0].published == (8080, 8080)
    assert services["web"].x.load_balance == "least-connections"
    assert services["worker"].replicas == 4
    assert services["shard"].ports[0].published == (9000, 9002)
    assert services["standby"].replicas == 0


def test_limits() -> None:
    services = stack_of("limits.yaml").services
    classic = services["classic"].resources
    mib = 2**20
    assert (classic.memory, classic.memswap, classic.memory_reservation) == (64 * mib, 96 * mib, 32 * mib)
    assert (classic.cpus, classic.cpu_shares, classic.cpuset, classic.pids) == (0.5, 512, "0", 64)
    assert (classic.io_weight, classic.io_weight_device) == (300, (("/dev/sda", 200),))
    ulimits = {u.name: (u.soft, u.hard) for u in services["classic"].ulimits}
    assert ulimits == {"nofile": (1024, 4096), "nproc": (512, 512), "core": (0, 0)}
    deployed = services["deployed"].resources
    assert (deployed.cpus, deployed.memory, deployed.pids, deployed.memory_reservation) == (
        1.5, 256 * mib, 128, 64 * mib)
    assert services["memory-hog"].resources.memswap == services["memory-hog"].resources.memory


def test_profiles() -> None:
    path = EXAMPLES / "profiles.yaml"

    def names(**kw) -> set[str]:
        return set(load_file(path, **kw).stack.services)

    assert names() == {"app", "db"}
    assert names(profiles=["debug"]) == {"app", "db", "debug-shell"}
    assert names(profiles=["nightly"]) == {"app", "db", "backup"}
    assert names(profiles=["tools"]) == {"app", "db", "backup", "migrate"}  # cache stays optional
    assert names(profiles=["*"]) == {"app", "db", "debug-shell", "backup", "migrate", "cache"}
    assert names(environ={"COMPOSE_PROFILES": "debug,cache"}) == {"app", "db", "debug-shell", "cache"}


def test_hooks_secrets_configs() -> None:
    stack = stack_of("hooks.yaml")
    app = stack.services["app"]
    assert [h.command[0] for h in app.post_start] == ["/bin/sh", "/bin/sh"]
    assert app.post_start[1].user == "root" and app.post_start[1].environment == {"HOOK": "post_start"}
    assert app.pre_stop[0].environment == {"HOOK": "pre_stop"}
    assert [(s.target, s.mode) for s in app.secrets] == [
        ("/run/secrets/db_password", None), ("/run/secrets/db.pass", 0o440)]
    assert [c.target for c in app.configs] == ["/etc/nginx/conf.d/default.conf", "/motd", "/srv/settings.ini"]
    assert stack.configs["motd"].content == "Welcome to the hooks stack.\n"
    assert Path(stack.configs["proxy_conf"].file).is_file()
    assert stack.services["legacy"].stop_signal == 2 and stack.services["legacy"].stop_grace_period == 3.0


def test_isolation() -> None:
    services = stack_of("isolation.yaml").services
    api = services["api"]
    assert api.cap_drop == ("ALL",) and api.cap_add == ("NET_BIND_SERVICE",)
    assert api.sysctls == {"net.core.somaxconn": "1024", "net.ipv4.tcp_syncookies": "0"}
    assert ("metadata", "169.254.169.254") in api.extra_hosts and ("legacy-db", "10.0.0.5") in api.extra_hosts
    assert api.pull_policy == "never"
    sidecar = services["sidecar"]
    assert (sidecar.network_mode, sidecar.ipc, sidecar.pid) == ("service:api", "service:api", "service:api")
    assert sidecar.networks == ()
    assert [d.service for d in sidecar.depends_on] == ["api"]
    assert [(d.source, d.target, d.permissions) for d in services["host-tools"].devices] == [
        ("/dev/fuse", "/dev/fuse", "rwm"), ("/dev/net/tun", "/dev/net/tun", "rw")]
    assert services["builder"].x.userns is True and services["builder"].privileged


def test_xpysup() -> None:
    stack = stack_of("xpysup.yaml")
    assert (stack.x.subnet_pool, stack.x.log_format) == ("10.89.0.0/16", "json")
    assert stack.x.registries["docker.io"].mirrors == ("mirror.internal:5000",)
    assert stack.x.registries["registry.internal:5000"].insecure is True
    web = stack.services["web"]
    backoff = stack.backoff_for(web)
    assert (backoff.base, backoff.cap, backoff.reset_after) == (1.0, 30.0, 60.0)  # the rest from the stack
    minimal = stack.services["minimal"]
    assert minimal.image is None and minimal.x.rootfs == str(EXAMPLES / "rootfs" / "busybox")
    assert minimal.x.userns == "auto"
    assert stack.services["observer"].x.restart_on_unhealthy is False


def test_extends_across_files() -> None:
    stack = load_project(EXAMPLES / "extends").stack
    assert set(stack.services) == {"api", "worker", "cron"}  # cron-template's profile is never enabled
    api, worker, cron = (stack.services[n] for n in ("api", "worker", "cron"))
    # env_file from the base file stays relative to the base file's directory.
    common_env = str(EXAMPLES / "extends" / "base" / "common.env")
    assert api.env_files == (common_env,) and worker.env_files == (common_env,)
    assert api.environment == {"APP_ENV": "staging", "APP_NAME": "api", "TZ": "UTC"}
    assert api.labels == {"com.example.tier": "backend", "com.example.role": "api"}
    assert api.resources.memory == 64 * 2**20 and api.healthcheck is not None
    assert worker.command == ("/bin/sh", "-c", "echo worker; exec sleep infinity")
    assert worker.ports == () and worker.replicas == 2  # `ports: !reset []`
    assert worker.environment["APP_NAME"] == "worker"
    assert cron.profiles == () and cron.resources.memory == 16 * 2**20


def test_multi_merge_reset_override() -> None:
    stack = load_project(EXAMPLES / "multi").stack
    assert [Path(f).name for f in stack.files] == ["compose.yaml", "compose.override.yaml"]
    assert set(stack.services) == {"app"}  # worker moved to a profile by the override
    app = stack.services["app"]
    assert app.environment == {"APP_VERSION": "1.4.2", "LOG_LEVEL": "debug"}  # FEATURE_FLAGS: !reset
    assert [(p.host_ip, p.published, p.target) for p in app.ports] == [("127.0.0.1", (8000, 8000), 8000)]
    assert app.replicas == 1 and app.resources.memory is None  # resources: !reset {}
    assert app.healthcheck.interval == 5.0 and app.healthcheck.test == ("CMD", "test", "-d", "/proc/1")
    assert app.restart.condition == "on-failure"
    assert stack.secrets["api_token"].content == "dev-token-not-a-secret"  # from multi/.env

    worker = load_project(EXAMPLES / "multi", profiles=["background"]).stack.services["worker"]
    assert worker.dns == ("1.1.1.1", "9.9.9.9")  # appended
    assert worker.labels == {"com.example.team": "dev"}  # !override


def test_multi_shell_wins_over_dotenv() -> None:
    app = load_project(EXAMPLES / "multi", environ={"APP_PORT": "9000"}).stack.services["app"]
    assert app.ports[0].published == (9000, 9000)


def test_multi_required_variable_is_reported() -> None:
    # `--env-file /dev/null` replaces .env: APP_VERSION's `:?` and the secret's variable both fail.
    with pytest.raises(SpecError) as info:
        load_project(EXAMPLES / "multi", env_files=["/dev/null"])
    text = str(info.value)
    assert 'required variable "APP_VERSION" is missing a value' in text
    assert "compose.yaml:" in text
