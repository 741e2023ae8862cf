"""config.parse.build_stack: every key family in every syntax, and located errors for bad values."""

from __future__ import annotations

import signal
import textwrap

import pytest

from supervisor.config.model import (
    Backoff,
    Dependency,
    Device,
    FileObject,
    FileRef,
    Healthcheck,
    Hook,
    IpamPool,
    Logging,
    Mount,
    Network,
    NetworkAttachment,
    Port,
    Registry,
    Resources,
    RestartPolicy,
    ServiceExtras,
    Ulimit,
    UpdateConfig,
    Volume,
)
from supervisor.config.parse import build_stack
from supervisor.config.source import parse_yaml
from supervisor.errors import SpecError

PROJECT = "/proj"


def load(text: str, *, environ: dict[str, str] | None = None, project_dir: str = PROJECT, active=None):
    tree = parse_yaml(textwrap.dedent(text), "c.yaml")
    return build_stack(tree, name="demo", project_dir=project_dir, files=[f"{project_dir}/c.yaml"],
                       environ=environ or {}, active=active)


def service_yaml(body: str) -> str:
    return "services:\n  web:\n" + textwrap.indent(textwrap.dedent(body), "    ")


def web(body: str, **kw):
    """The `web` service built from the keys in `body` (written at service level)."""
    return load(service_yaml("image: x\n" + textwrap.dedent(body)), **kw).services["web"]


def problems(text: str, **kw) -> list[str]:
    with pytest.raises(SpecError) as info:
        load(text, **kw)
    return [str(p) for p in info.value.problems]


# --- the stack ------------------------------------------------------------------------------------


def test_minimal_stack_defaults():
    stack = load("services:\n  web:\n    image: nginx\n")
    assert stack.name == "demo" and stack.project_dir == PROJECT and stack.files == ("/proj/c.yaml",)
    svc = stack.services["web"]
    assert svc.image == "nginx" and svc.command is None and svc.entrypoint is None
    assert svc.networks == (NetworkAttachment(network="default"),)
    assert svc.replicas == 1 and svc.restart == RestartPolicy() and svc.healthcheck is None
    assert svc.stop_signal is None and svc.stop_grace_period == 10.0  # None: the image's, else SIGTERM
    assert stack.networks == {"default": Network(key="default", name="demo_default")}


def test_only_active_services_are_built():
    stack = load("""
        services:
          web: {image: a}
          debug: {image: b, profiles: [debug]}
    """, active={"web"})
    assert list(stack.services) == ["web"]


def test_default_network_only_when_used():
    stack = load("""
        services:
          web: {image: a, network_mode: host}
    """)
    assert stack.networks == {}
    assert stack.services["web"].networks == () and stack.services["web"].network_mode == "host"


def test_sources_include_env_files(tmp_path):
    (tmp_path / "a.env").write_text("A=1\n")
    stack = build_stack(
        parse_yaml(service_yaml("image: x\nenv_file: [a.env, {path: b.env, required: false}]\n"), "c.yaml"),
        name="demo", project_dir=str(tmp_path), files=["c.yaml"], environ={}, sources=["/x/c.yaml"])
    assert stack.sources == ("/x/c.yaml", str(tmp_path / "a.env"), str(tmp_path / "b.env"))


# --- command, entrypoint --------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("echo hi", ("echo", "hi")),
    ("sh -c 'echo \"a b\"; exit 1'", ("sh", "-c", 'echo "a b"; exit 1')),
    ('["echo", "a b"]', ("echo", "a b")),
    ('""', ()),
    ("[]", ()),
    ("null", None),
])
def test_command_and_entrypoint(value, expected):
    svc = web(f"command: {value}\nentrypoint: {value}\n")
    assert svc.command == expected and svc.entrypoint == expected


# --- environment ----------------------------------------------------------------------------------


def test_environment_map_stringifies_like_compose():
    svc = web("""
        environment:
          S: text
          I: 8080
          F: 1.5
          G: 2.0
          B: true
          N: false
          E: ""
          FROM_ENV:
          UNSET:
    """, environ={"FROM_ENV": "outer"})
    assert dict(svc.environment) == {
        "B": "true", "E": "", "F": "1.5", "FROM_ENV": "outer", "G": "2", "I": "8080", "N": "false", "S": "text"}


def test_environment_list():
    svc = web("environment: [A=1, B=, C=x=y, FROM_ENV, UNSET]\n", environ={"FROM_ENV": "v"})
    assert dict(svc.environment) == {"A": "1", "B": "", "C": "x=y", "FROM_ENV": "v"}


def test_env_file_forms_and_precedence(tmp_path):
    (tmp_path / "a.env").write_text("A=from_a\nB=from_a\nC=from_a\n")
    (tmp_path / "b.env").write_text("B=from_b\nREF=${A}-${OUTER}\n")
    svc = web("""
        env_file:
          - a.env
          - path: ./b.env
          - path: missing.env
            required: false
        environment:
          C: from_environment
    """, project_dir=str(tmp_path), environ={"OUTER": "o"})
    assert dict(svc.environment) == {"A": "from_a", "B": "from_b", "C": "from_environment", "REF": "from_a-o"}
    assert svc.env_files == (str(tmp_path / "a.env"), str(tmp_path / "b.env"))


def test_env_file_string_form(tmp_path):
    (tmp_path / "x.env").write_text("X=1\n")
    assert dict(web("env_file: x.env\n", project_dir=str(tmp_path)).environment) == {"X": "1"}


def test_environment_without_value_removes_env_file_value(tmp_path):
    (tmp_path / "x.env").write_text("X=1\n")
    svc = web("env_file: x.env\nenvironment: [X]\n", project_dir=str(tmp_path))
    assert dict(svc.environment) == {}


def test_missing_required_env_file_is_located(tmp_path):
    out = problems(service_yaml("image: x\nenv_file: [nope.env]\n"), project_dir=str(tmp_path))
    assert out == [f'c.yaml:4:16: services.web.env_file[0]: env file "{tmp_path}/nope.env" not found']


def test_env_file_syntax_errors_are_reported(tmp_path):
    (tmp_path / "bad.env").write_text("1A=x\n")
    out = problems(service_yaml("image: x\nenv_file: bad.env\n"), project_dir=str(tmp_path))
    assert len(out) == 1 and out[0].startswith(str(tmp_path / "bad.env"))


# --- ports, expose --------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, expected", [
    ('"80"', [Port(target=80)]),
    ("80", [Port(target=80)]),
    ('"8080:80"', [Port(target=80, published=(8080, 8080))]),
    ('"127.0.0.1:8080:80"', [Port(target=80, published=(8080, 8080), host_ip="127.0.0.1")]),
    ('"127.0.0.1::80"', [Port(target=80, host_ip="127.0.0.1")]),
    ('"[::1]:8080:80"', [Port(target=80, published=(8080, 8080), host_ip="::1")]),
    ('"6060:6060/udp"', [Port(target=6060, published=(6060, 6060), protocol="udp")]),
    ('"53/UDP"', [Port(target=53, protocol="udp")]),
    ('"8000-8001:8000-8001"', [Port(target=8000, published=(8000, 8000)), Port(target=8001, published=(8001, 8001))]),
    ('"9090-9091:8080-8081"', [Port(target=8080, published=(9090, 9090)), Port(target=8081, published=(9091, 9091))]),
    ('"8000-8010:80"', [Port(target=80, published=(8000, 8010))]),
    ('"3000-3001"', [Port(target=3000), Port(target=3001)]),
    ("{target: 80, published: 8080, host_ip: 0.0.0.0, protocol: udp, mode: host, name: web, app_protocol: http}",
     [Port(target=80, published=(8080, 8080), host_ip="0.0.0.0", protocol="udp", mode="host", name="web",
           app_protocol="http")]),
    ('{target: "80", published: "8000-8005"}', [Port(target=80, published=(8000, 8005))]),
    ("{target: 80}", [Port(target=80)]),
])
def test_ports(spec, expected):
    assert list(web(f"ports:\n  - {spec}\n").ports) == expected


def test_expose_is_validated_and_canonical():
    assert web('expose: ["3000", 8000, "8000-8010", "53/udp", "80/tcp"]\n').expose == (
        "3000", "8000", "8000-8010", "53/udp", "80")


# --- volumes, tmpfs, devices ----------------------------------------------------------------------


@pytest.mark.parametrize("spec, expected", [
    ('"./data:/data:ro"', Mount(type="bind", source="/proj/data", target="/data", read_only=True)),
    ('"/abs:/abs:rw"', Mount(type="bind", source="/abs", target="/abs")),
    ('"../up:/up:z"', Mount(type="bind", source="/up", target="/up")),
    ('"/src:/dst:ro,Z,rshared"', Mount(type="bind", source="/src", target="/dst", read_only=True,
                                       bind_propagation="rshared")),
    ('"~/x:/x"', Mount(type="bind", source="/home/me/x", target="/x")),
    ('"name:/path"', Mount(type="volume", source="name", target="/path")),
    ('"name:/path:nocopy"', Mount(type="volume", source="name", target="/path", volume_nocopy=True)),
    ('"/anon"', Mount(type="volume", target="/anon")),
    ("{type: bind, source: ./b, target: /b, read_only: true, bind: {propagation: slave}}",
     Mount(type="bind", source="/proj/b", target="/b", read_only=True, bind_propagation="slave")),
    ("{type: bind, source: /b, target: /b, bind: {create_host_path: false}}",
     Mount(type="bind", source="/b", target="/b", bind_create_host_path=False)),
    ("{type: bind, source: /b, target: /b}",  # compose-go: no bind block, no host path creation
     Mount(type="bind", source="/b", target="/b", bind_create_host_path=False)),
    ("{type: volume, source: v, target: /v, volume: {nocopy: true, subpath: sub}}",
     Mount(type="volume", source="v", target="/v", volume_nocopy=True, volume_subpath="sub")),
    ("{type: volume, target: /v}", Mount(type="volume", target="/v")),
    ("{type: tmpfs, target: /t, tmpfs: {size: 1m, mode: 0o1777}}",
     Mount(type="tmpfs", target="/t", tmpfs_size=1 << 20, tmpfs_mode=0o1777)),
    ('{type: tmpfs, target: /t, tmpfs: {size: 4096, mode: "755"}}',
     Mount(type="tmpfs", target="/t", tmpfs_size=4096, tmpfs_mode=0o755)),
    # idmap (podman's option): carried on binds; dropped where it changes nothing, like nocopy on a
    # bind: a volume is idmapped anyway, a tmpfs is the container's own
    ('"./data:/data:idmap"', Mount(type="bind", source="/proj/data", target="/data", idmap=True)),
    ('"/src:/dst:rw,idmap,rslave"', Mount(type="bind", source="/src", target="/dst", idmap=True,
                                          bind_propagation="rslave")),
    ('"/src:/dst:idmap,ro"', Mount(type="bind", source="/src", target="/dst", idmap=True, read_only=True)),
    ('"name:/path:idmap"', Mount(type="volume", source="name", target="/path")),
    ("{type: bind, source: /b, target: /b, x-pysup: {idmap: true}}",
     Mount(type="bind", source="/b", target="/b", bind_create_host_path=False, idmap=True)),
    ('{type: bind, source: /b, target: /b, x-pysup: {idmap: "false"}}',
     Mount(type="bind", source="/b", target="/b", bind_create_host_path=False)),
    ("{type: bind, source: /b, target: /b, x-pysup: {}}",
     Mount(type="bind", source="/b", target="/b", bind_create_host_path=False)),
    ("{type: volume, source: v, target: /v, x-pysup: {idmap: true}}", Mount(type="volume", source="v", target="/v")),
    ("{type: tmpfs, target: /t, x-pysup: {idmap: true}}", Mount(type="tmpfs", target="/t")),
])
def test_volumes(spec, expected):
    assert web(f"volumes:\n  - {spec}\n", environ={"HOME": "/home/me"}).volumes == (expected,)


@pytest.mark.parametrize("spec, expected", [
    ("/run", [Mount(type="tmpfs", target="/run")]),
    ('"/run:size=64m,mode=1777"', [Mount(type="tmpfs", target="/run", tmpfs_size=64 << 20, tmpfs_mode=0o1777)]),
    ("[/a, '/b:ro,noexec,nosuid,uid=1000']",
     [Mount(type="tmpfs", target="/a"),
      Mount(type="tmpfs", target="/b", read_only=True, tmpfs_options=("noexec", "nosuid", "uid=1000"))]),
])
def test_tmpfs(spec, expected):
    assert list(web(f"tmpfs: {spec}\n").volumes) == expected


def test_tmpfs_entries_follow_volumes():
    svc = web("tmpfs: /t\nvolumes: [/anon]\n")
    assert [m.target for m in svc.volumes] == ["/anon", "/t"]


def test_devices():
    svc = web("""
        devices:
          - /dev/a
          - /dev/b:/dev/c
          - /dev/d:/dev/e:r
          - {source: /dev/f}
          - {source: /dev/g, target: /dev/h, permissions: rw}
    """)
    assert svc.devices == (
        Device(source="/dev/a", target="/dev/a"), Device(source="/dev/b", target="/dev/c"),
        Device(source="/dev/d", target="/dev/e", permissions="r"), Device(source="/dev/f", target="/dev/f"),
        Device(source="/dev/g", target="/dev/h", permissions="rw"))


def test_read_only_accepts_interpolated_strings():
    assert web("read_only: 'true'\n").read_only is True
    assert web("read_only: 'off'\n").read_only is False


# --- networks -------------------------------------------------------------------------------------


def test_networks_list_and_map():
    stack = load("""
        services:
          a: {image: x, networks: [front, back]}
          b:
            image: x
            networks:
              front:
              back:
                aliases: [db, database]
                ipv4_address: 10.0.0.5
                ipv6_address: "2001:db8::0005"
                priority: 10
                interface_name: eth1
        networks:
          front: {}
          back:
            name: custom
            driver: bridge
            driver_opts: {com.docker.network.bridge.name: br0, mtu: 1400}
            internal: true
            enable_ipv6: "true"
            attachable: true
            ipam: {config: [{subnet: 10.0.0.0/24, gateway: 10.0.0.1, ip_range: 10.0.0.128/25}]}
            labels: [a=b, c]
          ext: {external: true}
          legacy: {external: {name: real}}
    """)
    assert stack.services["a"].networks == (NetworkAttachment(network="back"), NetworkAttachment(network="front"))
    assert stack.services["b"].networks == (
        NetworkAttachment(network="back", aliases=("db", "database"), ipv4_address="10.0.0.5",
                          ipv6_address="2001:db8::5", priority=10, interface_name="eth1"),
        NetworkAttachment(network="front"))
    assert stack.networks["front"] == Network(key="front", name="demo_front")
    assert stack.networks["back"] == Network(
        key="back", name="custom", driver="bridge",
        driver_opts={"com.docker.network.bridge.name": "br0", "mtu": "1400"}, internal=True, enable_ipv6=True,
        attachable=True, ipam=(IpamPool(subnet="10.0.0.0/24", gateway="10.0.0.1", ip_range="10.0.0.128/25"),),
        labels={"a": "b", "c": ""})
    assert stack.networks["ext"] == Network(key="ext", name="ext", external=True)
    assert stack.networks["legacy"] == Network(key="legacy", name="real", external=True)
    assert "default" not in stack.networks


def test_extra_hosts_list_and_map():
    assert web('extra_hosts: ["a:1.2.3.4", "b=::1", "c:::2", "d=[::3]", "e=1.1.1.1,2.2.2.2", '
               '"gw:host-gateway"]\n').extra_hosts == (
        ("a", "1.2.3.4"), ("b", "::1"), ("c", "::2"), ("d", "::3"), ("e", "1.1.1.1"), ("e", "2.2.2.2"),
        ("gw", "host-gateway"))
    assert web("extra_hosts: {a: 1.2.3.4, b: ['::1', '10.0.0.1']}\n").extra_hosts == (
        ("a", "1.2.3.4"), ("b", "::1"), ("b", "10.0.0.1"))


def test_dns_string_or_list():
    svc = web("dns: 8.8.8.8\ndns_search: [a.example, b.example]\ndns_opt: [use-vc]\n")
    assert svc.dns == ("8.8.8.8",) and svc.dns_search == ("a.example", "b.example") and svc.dns_opt == ("use-vc",)


# --- dependencies, health, restart ----------------------------------------------------------------


def test_depends_on_list_and_map():
    stack = load("""
        services:
          a: {image: x, depends_on: [c, b]}
          b:
            image: x
            depends_on:
              c: {condition: service_healthy, restart: true}
              d: {condition: service_completed_successfully, required: false}
          c: {image: x}
          d: {image: x}
    """)
    assert stack.services["a"].depends_on == (Dependency(service="b"), Dependency(service="c"))
    assert stack.services["b"].depends_on == (
        Dependency(service="c", condition="service_healthy", restart=True),
        Dependency(service="d", condition="service_completed_successfully", required=False))


def test_implicit_dependencies():
    svc = web("links: ['db:database']\nvolumes_from: [data, 'container:x']\nnetwork_mode: service:vpn\n"
              "depends_on: {db: {condition: service_healthy}}\n")
    assert svc.depends_on == (
        Dependency(service="data"), Dependency(service="db", condition="service_healthy"),
        Dependency(service="vpn", restart=True))


@pytest.mark.parametrize("body, expected", [
    ("healthcheck: {test: curl -f http://x}", Healthcheck(test=("CMD-SHELL", "curl -f http://x"))),
    ("healthcheck: {test: [CMD, curl, -f]}", Healthcheck(test=("CMD", "curl", "-f"))),
    ("healthcheck: {test: [CMD-SHELL, exit 0]}", Healthcheck(test=("CMD-SHELL", "exit 0"))),
    ("healthcheck: {test: [NONE]}", Healthcheck(test=("NONE",))),  # disabled, unlike no key (None)
    ("healthcheck: {test: [CMD, x], disable: true}", Healthcheck(test=("NONE",))),
    ("healthcheck: {interval: 5s}", Healthcheck(test=(), interval=5.0)),
    ("healthcheck: {test: [CMD, x], interval: 1m30s, timeout: 500ms, retries: '5', start_period: 1h,"
     " start_interval: 2s}",
     Healthcheck(test=("CMD", "x"), interval=90.0, timeout=0.5, retries=5, start_period=3600.0, start_interval=2.0)),
])
def test_healthcheck(body, expected):
    assert web(body + "\n").healthcheck == expected


@pytest.mark.parametrize("body, expected", [
    ("restart: always", RestartPolicy(condition="always")),
    ("restart: unless-stopped", RestartPolicy(condition="unless-stopped")),
    ('restart: "no"', RestartPolicy(condition="no")),
    ("restart: on-failure", RestartPolicy(condition="on-failure")),
    ("restart: on-failure:3", RestartPolicy(condition="on-failure", max_attempts=3)),
    ("restart: on-failure:0", RestartPolicy(condition="on-failure")),
    ("deploy: {restart_policy: {condition: any}}", RestartPolicy(condition="always")),
    ("deploy: {restart_policy: {}}", RestartPolicy(condition="always")),
    ("deploy: {restart_policy: {condition: none}}", RestartPolicy(condition="no")),
    ("restart: always\ndeploy: {restart_policy: {condition: on-failure, max_attempts: 4, delay: 5s, window: 1m}}",
     RestartPolicy(condition="on-failure", max_attempts=4, delay=5.0, window=60.0)),
])
def test_restart(body, expected):
    assert web(body + "\n").restart == expected


@pytest.mark.parametrize("body, expected", [
    ("scale: 3", 3), ("deploy: {replicas: 2}", 2), ("scale: 0", 0), ("scale: 2\ndeploy: {replicas: '2'}", 2),
])
def test_replicas(body, expected):
    assert web(body + "\n").replicas == expected


def test_update_and_rollback_config():
    svc = web("""
        deploy:
          update_config: {parallelism: 2, delay: 10s, failure_action: rollback, monitor: 1m,
                          max_failure_ratio: 0.25, order: start-first}
          rollback_config: {parallelism: 0}
    """)
    assert svc.update_config == UpdateConfig(parallelism=2, delay=10.0, failure_action="rollback", monitor=60.0,
                                             max_failure_ratio=0.25, order="start-first")
    assert svc.rollback_config == UpdateConfig(parallelism=0)


def test_stop_signal_and_grace_period():
    svc = web("stop_signal: sigint\nstop_grace_period: 1m30s\n")
    assert svc.stop_signal == signal.SIGINT and svc.stop_grace_period == 90.0
    assert web("stop_signal: '9'\n").stop_signal == signal.SIGKILL


def test_hooks():
    svc = web("""
        post_start:
          - command: echo started
            user: root
            privileged: true
            working_dir: /w
            environment: [A=1, FROM_ENV]
        pre_stop:
          - command: [sh, -c, "sleep 1"]
    """, environ={"FROM_ENV": "e"})
    assert svc.post_start == (Hook(command=("echo", "started"), user="root", privileged=True, working_dir="/w",
                                   environment={"A": "1", "FROM_ENV": "e"}),)
    assert svc.pre_stop == (Hook(command=("sh", "-c", "sleep 1")),)


# --- resources ------------------------------------------------------------------------------------


def test_service_level_limits():
    svc = web("""
        mem_limit: 256m
        memswap_limit: -1
        mem_reservation: 128m
        cpus: 1.5
        cpu_shares: 512
        cpuset: 0-1,3
        pids_limit: 100
        blkio_config:
          weight: 300
          weight_device: [{path: /dev/sda, weight: 400}]
    """)
    assert svc.resources == Resources(memory=256 << 20, memswap=-1, memory_reservation=128 << 20, cpus=1.5,
                                      cpu_shares=512, cpuset="0-1,3", pids=100, io_weight=300,
                                      io_weight_device=(("/dev/sda", 400),))


def test_deploy_limits_and_matching_twins():
    svc = web("""
        mem_limit: 1g
        cpus: "0.5"
        deploy:
          resources:
            limits: {memory: 1024m, cpus: 0.5, pids: 50}
            reservations: {memory: 64m, cpus: 0.25}
    """)
    assert svc.resources == Resources(memory=1 << 30, cpus=0.5, pids=50, memory_reservation=64 << 20)


def test_zero_limits_mean_unset():
    assert web("mem_limit: 0\ncpus: 0\npids_limit: 0\n").resources == Resources()


# --- security and misc ----------------------------------------------------------------------------


def test_capabilities_are_normalised():
    svc = web("cap_add: [net_admin, CAP_SYS_TIME, ALL, NET_ADMIN]\ncap_drop: [cap_chown]\n")
    assert svc.cap_add == ("NET_ADMIN", "SYS_TIME", "ALL") and svc.cap_drop == ("CHOWN",)


def test_ulimits():
    svc = web("ulimits: {nproc: 65535, nofile: {soft: 1024, hard: '4096'}, core: -1}\n")
    assert svc.ulimits == (Ulimit(name="core", soft=-1, hard=-1), Ulimit(name="nofile", soft=1024, hard=4096),
                           Ulimit(name="nproc", soft=65535, hard=65535))


def test_sysctls_and_labels_map_or_list():
    svc = web("sysctls: [net.core.somaxconn=1024, net.ipv4.tcp_syncookies=0]\nlabels: {a: 1, b: true, c: null}\n")
    assert dict(svc.sysctls) == {"net.core.somaxconn": "1024", "net.ipv4.tcp_syncookies": "0"}
    assert dict(svc.labels) == {"a": "1", "b": "true", "c": ""}


def test_plain_string_keys():
    svc = web("""
        working_dir: /app
        user: "1000:1000"
        hostname: h
        domainname: d.example
        container_name: c
        pid: host
        ipc: shareable
        userns_mode: host
        init: true
        privileged: true
        security_opt: [no-new-privileges:true]
        profiles: [a, b]
        links: [db]
        volumes_from: [data]
        pull_policy: if_not_present
    """)
    assert (svc.working_dir, svc.user, svc.hostname, svc.domainname, svc.container_name) == (
        "/app", "1000:1000", "h", "d.example", "c")
    assert (svc.pid, svc.ipc, svc.userns_mode, svc.init, svc.privileged) == ("host", "shareable", "host", True, True)
    assert svc.security_opt == ("no-new-privileges:true",) and svc.profiles == ("a", "b")
    assert svc.links == ("db",) and svc.volumes_from == ("data",) and svc.pull_policy == "missing"


def test_logging():
    svc = web("logging: {driver: json-file, options: {max-size: 10m, max-file: 3}}\n")
    assert svc.logging == Logging(driver="json-file", options={"max-file": "3", "max-size": "10m"})


def test_secrets_and_configs(tmp_path):
    stack = load("""
        services:
          web:
            image: x
            secrets:
              - token
              - {source: token, target: renamed, uid: "1000", gid: "1000", mode: "0440"}
              - {source: token, target: /abs/path, mode: 0o400}
            configs:
              - conf
              - {source: conf, target: etc/app.conf}
        secrets:
          token: {file: ./token.txt}
          fromenv: {environment: TOKEN}
          ext: {external: true}
          named: {file: /t, name: real-name}
        configs:
          conf: {content: "a=1"}
          envconf: {environment: TOKEN}
    """, environ={"TOKEN": "s3cret"})
    svc = stack.services["web"]
    assert svc.secrets == (
        FileRef(source="token", target="/run/secrets/token"),
        FileRef(source="token", target="/run/secrets/renamed", uid="1000", gid="1000", mode=0o440),
        FileRef(source="token", target="/abs/path", mode=0o400))
    assert svc.configs == (FileRef(source="conf", target="/conf"), FileRef(source="conf", target="/etc/app.conf"))
    assert stack.secrets == {
        "ext": FileObject(key="ext", name="ext", external=True),
        "fromenv": FileObject(key="fromenv", name="demo_fromenv", environment="TOKEN", content="s3cret"),
        "named": FileObject(key="named", name="real-name", file="/t"),
        "token": FileObject(key="token", name="demo_token", file="/proj/token.txt"),
    }
    assert stack.configs["conf"] == FileObject(key="conf", name="demo_conf", content="a=1")
    assert stack.configs["envconf"].content == "s3cret"


def test_top_level_volumes():
    stack = load("""
        services: {}
        volumes:
          data:
          named: {name: real}
          ext: {external: true}
          opts:
            driver: local
            driver_opts: {type: none, o: bind, device: ./here}
            labels: {x: y}
    """)
    assert stack.volumes == {
        "data": Volume(key="data", name="demo_data"),
        "ext": Volume(key="ext", name="ext", external=True),
        "named": Volume(key="named", name="real"),
        "opts": Volume(key="opts", name="demo_opts", driver="local",
                       driver_opts={"type": "none", "o": "bind", "device": "/proj/here"}, labels={"x": "y"}),
    }


def test_x_pysup():
    stack = load("""
        x-pysup:
          backoff: {base: 1s, cap: 2m}
          registries:
            docker.io: {mirrors: [https://mirror.example], insecure: false}
            local:5000: {insecure: true}
          subnet_pool: 10.99.0.0/16
          log_format: json
        services:
          web:
            image: x
            x-pysup:
              rootfs: ./root
              userns: auto
              restart_on_unhealthy: false
              backoff: {base: 500ms}
              load_balance: least-connections
          other:
            image: x
            x-pysup: {userns: true}
    """)
    assert stack.x.backoff == Backoff(base=1.0, cap=120.0, reset_after=10.0)
    assert stack.x.registries == {"docker.io": Registry(mirrors=("https://mirror.example",)),
                                  "local:5000": Registry(insecure=True)}
    assert stack.x.subnet_pool == "10.99.0.0/16" and stack.x.log_format == "json"
    assert stack.services["web"].x == ServiceExtras(
        rootfs="/proj/root", userns="auto", restart_on_unhealthy=False,
        backoff=Backoff(base=0.5, cap=120.0, reset_after=10.0), load_balance="least-connections")
    assert stack.services["other"].x == ServiceExtras(userns=True)
    assert stack.backoff_for(stack.services["other"]) == stack.x.backoff


# --- errors ---------------------------------------------------------------------------------------

# (service body, expected "line:col: path: message"). The body starts on line 3, column 5.
INVALID = [
    ('ports: ["80:abc"]', '3:13: services.web.ports[0]: invalid port "80:abc"'),
    ('ports: ["80/sctp"]', '3:13: services.web.ports[0]: invalid port "80/sctp": protocol "sctp" is not supported'
                           ' (use tcp or udp)'),
    ('ports: ["8000-8001:80-82"]',
     '3:13: services.web.ports[0]: invalid port "8000-8001:80-82": the host and container port ranges differ'
     ' in length'),
    ('ports: ["70000"]', '3:13: services.web.ports[0]: invalid port "70000"'),
    ('ports: ["1.2.3:80:80"]', '3:13: services.web.ports[0]: invalid port "1.2.3:80:80"'),
    ("ports: [{target: 80, published: x}]", '3:37: services.web.ports[0].published: invalid port "x"'),
    ("ports: [{target: 80, protocol: sctp}]",
     '3:36: services.web.ports[0].protocol: invalid protocol "sctp" (use tcp, udp)'),
    ('expose: ["80-x"]', '3:14: services.web.expose[0]: invalid exposed port "80-x"'),
    ('volumes: ["a:b:c:d"]', '3:15: services.web.volumes[0]: invalid volume "a:b:c:d": too many colons'),
    ('volumes: ["./x:rel"]',
     '3:15: services.web.volumes[0]: invalid volume "./x:rel": the container path "rel" must be absolute'),
    ('volumes: ["./x:/x:rox"]', '3:15: services.web.volumes[0]: invalid volume "./x:/x:rox": unknown option "rox"'),
    ('volumes: ["./x:/x:rw,idmapped"]',
     '3:15: services.web.volumes[0]: invalid volume "./x:/x:rw,idmapped": unknown option "idmapped"'),
    ("volumes: [{type: bind, source: /a, target: /b, x-pysup: {idmap: sure}}]",
     '3:69: services.web.volumes[0].x-pysup.idmap: invalid boolean "sure"'),
    ("volumes: [{type: bind, source: /a, target: /b, x-pysup: on}]",
     '3:61: services.web.volumes[0].x-pysup: expected a mapping'),
    ('volumes: ["a::/b"]', '3:15: services.web.volumes[0]: invalid volume "a::/b": empty section between colons'),
    ("volumes: [{type: npipe, target: /x}]",
     '3:22: services.web.volumes[0].type: invalid volume type "npipe" (use bind, volume, tmpfs)'),
    ("volumes: [{type: bind, target: /x}]", "3:15: services.web.volumes[0]: a bind mount needs a source"),
    ("volumes: [{type: tmpfs, target: /x, tmpfs: {size: 1x}}]",
     '3:55: services.web.volumes[0].tmpfs.size: invalid byte size "1x": unknown unit "x" (use b, k, m, g, t or p)'),
    ("volumes: [{type: bind, source: /a, target: /b, bind: {propagation: up}}]",
     '3:72: services.web.volumes[0].bind.propagation: invalid propagation "up" '
     "(use rprivate, private, rshared, shared, rslave, slave)"),
    ('tmpfs: ["/t:size=1z"]', '3:13: services.web.tmpfs[0]: invalid byte size "1z": unknown unit "z" '
                               "(use b, k, m, g, t or p)"),
    ('tmpfs: ["/t:foo"]', '3:13: services.web.tmpfs[0]: invalid tmpfs "/t:foo": unknown option "foo"'),
    ('devices: ["/a:/b:rwx"]',
     '3:15: services.web.devices[0]: invalid device permissions "rwx" (use a combination of r, w and m)'),
    ('devices: ["a:b:c:d"]', '3:15: services.web.devices[0]: invalid device "a:b:c:d": expected '
                              "HOST[:CONTAINER[:PERMISSIONS]]"),
    ("restart: sometimes", '3:14: services.web.restart: invalid restart policy "sometimes" '
                           "(use no, always, on-failure[:N] or unless-stopped)"),
    ("restart: always:3", '3:14: services.web.restart: invalid restart policy "always:3": only on-failure takes'
                          " a retry count"),
    ("restart: on-failure:x", '3:14: services.web.restart: invalid restart policy retry count "x"'),
    ("deploy: {restart_policy: {condition: maybe}}",
     '3:42: services.web.deploy.restart_policy.condition: invalid restart condition "maybe" '
     "(use none, on-failure or any)"),
    ("scale: 2\ndeploy: {replicas: 3}", "3:5: services.web.scale: can't set distinct values on \"scale\" and "
                                        "\"deploy.replicas\""),
    ("scale: -1", '3:12: services.web.scale: invalid scale "-1": must be at least 0'),
    ("container_name: c\ndeploy: {replicas: 2}",
     "3:5: services.web.container_name: can't set \"container_name\" and \"deploy.replicas\": container names"
     " must be unique"),
    ("mem_limit: 1g\ndeploy: {resources: {limits: {memory: 2g}}}",
     "3:5: services.web.mem_limit: can't set distinct values on \"mem_limit\" and \"deploy.resources.limits.memory\""),
    ("mem_limit: 1g\ndeploy: {resources: {limits: {cpus: 1}}}",  # compose: a missing twin counts as 0
     "3:5: services.web.mem_limit: can't set distinct values on \"mem_limit\" and \"deploy.resources.limits.memory\""),
    ("cpus: 1\ndeploy: {resources: {limits: {cpus: 2}}}",
     "3:5: services.web.cpus: can't set distinct values on \"cpus\" and \"deploy.resources.limits.cpus\""),
    ("pids_limit: 10\ndeploy: {resources: {limits: {pids: 20}}}",
     "3:5: services.web.pids_limit: can't set distinct values on \"pids_limit\" and \"deploy.resources.limits.pids\""),
    ("mem_reservation: 1m\ndeploy: {resources: {reservations: {memory: 2m}}}",
     "3:5: services.web.mem_reservation: can't set distinct values on \"mem_reservation\" and "
     "\"deploy.resources.reservations.memory\""),
    ("mem_limit: lots", '3:16: services.web.mem_limit: invalid byte size "lots"'),
    ("cpus: many", '3:11: services.web.cpus: invalid cpus "many": expected a number like "1.5"'),
    ("cpuset: 0-a", '3:13: services.web.cpuset: invalid cpuset "0-a": expected CPU numbers and ranges like "0-2,4"'),
    ("blkio_config: {weight: 5}", '3:28: services.web.blkio_config.weight: invalid blkio weight "5": must be between'
                                  " 10 and 1000"),
    ("cap_add: [NET_ADMIN, FLY]", '3:26: services.web.cap_add[1]: unknown capability "FLY"'),
    ("ulimits: {nofile: {soft: 2048, hard: 1024}}",
     '3:23: services.web.ulimits.nofile: ulimit "nofile": the soft limit 2048 is greater than the hard limit 1024'),
    ("ulimits: {files: 10}", '3:15: services.web.ulimits.files: unknown ulimit "files"'),
    ("healthcheck: {test: [RUN, x]}",
     '3:25: services.web.healthcheck.test: healthcheck test must start with "CMD", "CMD-SHELL" or "NONE"'),
    ("healthcheck: {test: [CMD]}", '3:25: services.web.healthcheck.test: healthcheck test "CMD" needs a command'
                                   " after it"),
    ("healthcheck: {test: [CMD, x], interval: 10}",
     '3:45: services.web.healthcheck.interval: invalid duration "10": a unit is required, e.g. "10s"'),
    ("healthcheck: {test: [CMD, x], retries: many}", '3:44: services.web.healthcheck.retries: invalid integer "many"'),
    ("stop_signal: SIGFOO", '3:18: services.web.stop_signal: invalid signal "SIGFOO"'),
    ("stop_grace_period: 10x", '3:24: services.web.stop_grace_period: invalid duration "10x": unknown unit "x" '
                               "(use ns, us, ms, s, m, h, d or w)"),
    ("read_only: maybe", '3:16: services.web.read_only: invalid boolean "maybe"'),
    ("command: \"echo 'x\"", '3:14: services.web.command: invalid command "echo \'x": no closing quotation'),
    ("environment: [A=1, =x]", '3:24: services.web.environment[1]: invalid entry "=x": empty name'),
    ("networks: {n: {priority: high}}", '3:30: services.web.networks.n.priority: invalid integer "high"'),
    ('extra_hosts: ["nohost"]', '3:19: services.web.extra_hosts[0]: invalid extra host "nohost": missing IP'),
    ('extra_hosts: ["h:notanip"]',
     '3:19: services.web.extra_hosts[0]: invalid extra host "h": "notanip" is not an IP address'),
    ("networks: {n: {ipv4_address: '::1'}}", '3:34: services.web.networks.n.ipv4_address: invalid IPv4 address "::1"'),
    ("depends_on: {db: {condition: started}}",
     '3:34: services.web.depends_on.db.condition: invalid condition "started" '
     "(use service_started, service_healthy, service_completed_successfully)"),
    ("pull_policy: sometimes", '3:18: services.web.pull_policy: invalid pull_policy "sometimes" '
                               "(use always, never, missing, build, daily, weekly or every_<duration>)"),
    ("secrets: [{source: s, mode: '0999'}]",
     '3:33: services.web.secrets[0].mode: invalid mode "0999": expected an octal number like "0755"'),
    ("deploy: {update_config: {order: random}}",
     '3:37: services.web.deploy.update_config.order: invalid order "random" (use stop-first, start-first)'),
    ("deploy: {update_config: {max_failure_ratio: 2}}",
     '3:49: services.web.deploy.update_config.max_failure_ratio: invalid max_failure_ratio "2": must be between'
     " 0 and 1"),
    ("post_start: [{command: []}]", "3:18: services.web.post_start[0]: a hook needs a command"),
    ("x-pysup: {load_balance: random}",
     '3:29: services.web.x-pysup.load_balance: invalid load_balance "random" (use round-robin, least-connections)'),
]


@pytest.mark.parametrize("body, expected", INVALID, ids=[b.split(":")[0] + str(i) for i, (b, _) in enumerate(INVALID)])
def test_invalid_service_values(body, expected):
    assert problems(service_yaml(body + "\nimage: x\n")) == ["c.yaml:" + expected]


def test_problems_are_collected_across_services():
    out = problems("""
        services:
          a:
            image: x
            ports: ["x"]
            restart: bad
          b:
            image: x
            cap_add: [NOPE]
    """)
    assert out == [
        'c.yaml:5:13: services.a.ports[0]: invalid port "x"',
        'c.yaml:6:14: services.a.restart: invalid restart policy "bad" '
        "(use no, always, on-failure[:N] or unless-stopped)",
        'c.yaml:9:15: services.b.cap_add[0]: unknown capability "NOPE"',
    ]


@pytest.mark.parametrize("text, expected", [
    ("secrets: {s: {environment: NOPE}}", '2:28: secrets.s.environment: environment variable "NOPE" is not set'),
    ("secrets: {s: {name: x}}", '2:14: secrets.s: secret "s" must declare either file or environment'),
    ("configs: {c: {name: x}}", '2:14: configs.c: config "c" must declare either file, environment or content'),
    ("networks: {n: {name: a, external: {name: b}}}",
     "2:42: networks.n.external.name: can't use both 'networks.external.name' (deprecated) and 'networks.name'"),
    ("networks: {n: {ipam: {config: [{subnet: 10.0.0.0/33}]}}}",
     '2:41: networks.n.ipam.config[0].subnet: invalid subnet "10.0.0.0/33"'),
    ("x-pysup: {log_format: xml}", '2:23: x-pysup.log_format: invalid log_format "xml" (use console, json)'),
    ("x-pysup: {backoff: {cap: forever}}", '2:26: x-pysup.backoff.cap: invalid duration "forever"'),
])
def test_invalid_top_level_values(text, expected):
    assert problems("services: {}\n" + text + "\n") == ["c.yaml:" + expected]
