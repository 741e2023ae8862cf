"""config.render: the normalised compose output, and the round trip render -> build_stack."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import attrs
import pytest

from supervisor.config.interpolate import interpolate
from supervisor.config.load import load as load_stack
from supervisor.config.model import FrozenMap, Mount, Service, Stack
from supervisor.config.parse import build_stack
from supervisor.config.render import to_compose, to_json, to_yaml
from supervisor.config.source import parse_yaml

ENVIRON = {"HOME": "/home/me", "TOKEN": "s3cret", "FROM_ENV": "outer"}


def load(text: str, project_dir: str = "/proj") -> Stack:
    return build_stack(parse_yaml(textwrap.dedent(text), "c.yaml"), name="demo", project_dir=project_dir,
                       files=["c.yaml"], environ=ENVIRON)


def reload(text: str, like: Stack) -> Stack:
    return build_stack(parse_yaml(text, "rendered.yaml"), name=like.name, project_dir=like.project_dir,
                       files=like.files, environ=ENVIRON)


EXAMPLES = {
    "minimal": """
        services:
          web: {image: nginx}
    """,
    "everything": """
        x-pysup:
          backoff: {base: 250ms, cap: 5m, reset_after: 1m}
          registries: {docker.io: {mirrors: [https://m.example]}, "local:5000": {insecure: true}}
          subnet_pool: 10.99.0.0/16
          log_format: json
        services:
          web:
            image: nginx:1.27
            entrypoint: ""
            command: sh -c 'echo "$$HOME"; exec nginx'
            environment: {A: 1, B: true, C: "multi\\nline", D: "1e3", E: "0o17", F: "no", G: "010", FROM_ENV: null}
            working_dir: /app
            user: "1000:1000"
            hostname: web
            domainname: example.org
            ports: ["80", "8080:80", "127.0.0.1:8081:81/udp", "[::1]:8082:82", "9000-9001:9000-9001",
                    "7000-7010:70", {target: 443, published: 8443, name: https, app_protocol: https, mode: host}]
            expose: [3000, "4000-4001", "53/udp"]
            volumes:
              - ./data:/data:ro
              - named:/named:nocopy
              - /anon
              - ~/cache:/cache:rshared
              - /host/data:/hostdata:rw,idmap
              - {type: bind, source: /host/logs, target: /logs, x-pysup: {idmap: true}}
              - {type: bind, source: /srv, target: /srv, bind: {create_host_path: false}}
              - {type: volume, source: named, target: /sub, volume: {subpath: a/b}}
              - {type: tmpfs, target: /scratch, tmpfs: {size: 10m, mode: 0o700}}
            tmpfs: [/run, "/tmp:size=64m,mode=1777,noexec,nosuid"]
            read_only: true
            networks:
              front: {aliases: [www], priority: 5}
              back: {ipv4_address: 10.1.0.5, interface_name: eth9}
            extra_hosts: ["gw:host-gateway", "v6=::1"]
            depends_on:
              db: {condition: service_healthy, restart: true}
              cache: {condition: service_started, required: false}
            links: [db]
            healthcheck:
              test: [CMD, curl, -f, http://localhost]
              interval: 1m30s
              timeout: 500ms
              retries: 5
              start_period: 1h
              start_interval: 2s
            deploy:
              replicas: 3
              restart_policy: {condition: on-failure, max_attempts: 4, delay: 5s, window: 1m}
              resources:
                limits: {cpus: "1.5", memory: 512m, pids: 100}
                reservations: {memory: 128m}
              update_config: {parallelism: 2, delay: 10s, order: start-first, failure_action: rollback}
              rollback_config: {parallelism: 0, monitor: 30s, max_failure_ratio: 0.5}
            memswap_limit: -1
            cpu_shares: 512
            cpuset: "0-1"
            blkio_config: {weight: 300, weight_device: [{path: /dev/sda, weight: 400}]}
            stop_signal: SIGQUIT
            stop_grace_period: 1m
            init: true
            cap_add: [net_admin]
            cap_drop: [ALL]
            privileged: true
            security_opt: ["no-new-privileges:true"]
            ulimits: {nofile: {soft: 1024, hard: 4096}, nproc: 512}
            sysctls: {net.core.somaxconn: 1024}
            labels: [com.example.a=1, com.example.flag]
            profiles: [web]
            devices: ["/dev/fuse", "/dev/a:/dev/b:r"]
            dns: 1.1.1.1
            dns_search: [example.org]
            dns_opt: [use-vc]
            logging: {driver: json-file, options: {max-size: 10m}}
            secrets: [token, {source: fromenv, target: other, uid: "1", gid: "2", mode: 0o400}]
            configs: [conf, {source: conf, target: /etc/app.conf}]
            post_start: [{command: echo up, user: root, privileged: true, working_dir: /, environment: {A: b}}]
            pre_stop: [{command: [sh, -c, "sleep 1"]}]
            pull_policy: always
            x-pysup:
              rootfs: ./rootfs
              userns: auto
              restart_on_unhealthy: false
              backoff: {base: 1s}
              load_balance: least-connections
          db:
            image: postgres
            restart: on-failure:3
            network_mode: host
            pid: host
            ipc: shareable
            userns_mode: host
            container_name: the-db
            healthcheck: {test: pg_isready}
          cache:
            image: redis
            restart: unless-stopped
            networks: [back]
            volumes_from: [db]
            healthcheck: {disable: true}
          job:
            image: busybox
            deploy: {restart_policy: {condition: any, max_attempts: 2}}
            network_mode: none
        networks:
          front: {}
          back:
            name: backnet
            driver: bridge
            driver_opts: {mtu: 1400}
            internal: true
            enable_ipv6: true
            attachable: true
            ipam: {config: [{subnet: 10.1.0.0/24, gateway: 10.1.0.1, ip_range: 10.1.0.128/25}]}
            labels: {team: core}
          outside: {external: true}
        volumes:
          named: {driver_opts: {type: tmpfs}, labels: [x=y]}
          old: {external: {name: legacy}}
        secrets:
          token: {file: ./token.txt}
          fromenv: {environment: TOKEN}
        configs:
          conf: {content: "key = value\\nother = 2\\n"}
          envconf: {environment: TOKEN}
    """,
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
@pytest.mark.parametrize("fmt", [to_yaml, to_json])
def test_round_trip(name, fmt):
    stack = load(EXAMPLES[name])
    again = reload(fmt(stack), stack)
    assert again == stack
    assert fmt(again) == fmt(stack)


def test_round_trip_through_interpolation():
    """With `$` escaped, the output survives interpolation (what `pysup config` output meets)."""
    stack = load(EXAMPLES["everything"])
    assert "$HOME" in stack.services["web"].command[2]
    tree = interpolate(parse_yaml(to_yaml(stack, escape_interpolation=True), "r.yaml"), ENVIRON)
    again = build_stack(tree, name="demo", project_dir="/proj", files=["c.yaml"], environ=ENVIRON)
    assert again == stack


def test_round_trip_keeps_env_files(tmp_path):
    (tmp_path / "app.env").write_text("A=from_file\nB=from_file\n")
    stack = load("""
        services:
          web:
            image: x
            env_file: [app.env, {path: optional.env, required: false}]
            environment: {B: override}
    """, project_dir=str(tmp_path))
    assert stack.services["web"].env_files == (str(tmp_path / "app.env"),)
    again = reload(to_yaml(stack), stack)
    # sources name what the loader read; the missing optional file is in the first load's only
    assert again == attrs.evolve(stack, sources=(str(tmp_path / "app.env"),))
    assert dict(again.services["web"].environment) == {"A": "from_file", "B": "override"}


def test_normalised_form():
    stack = load("""
        services:
          web:
            image: x
            command: echo hi
            ports: ["8080:80"]
            volumes: ["./d:/d:ro"]
            depends_on: [db]
            mem_limit: 256m
            stop_signal: SIGINT
            stop_grace_period: 90s
            healthcheck: {test: "true", interval: 10s}
            restart: always
            tmpfs: "/t:size=1k"
          db:
            image: y
            environment: [A=1]
    """)
    assert to_compose(stack) == {
        "name": "demo",
        "services": {
            "db": {"image": "y", "environment": {"A": "1"}, "networks": {"default": None}},
            "web": {
                "image": "x",
                "command": ["echo", "hi"],
                "ports": [{"target": 80, "published": "8080", "protocol": "tcp", "mode": "ingress"}],
                "volumes": [
                    {"type": "bind", "source": "/proj/d", "target": "/d", "read_only": True,
                     "bind": {"create_host_path": True}},
                    {"type": "tmpfs", "target": "/t", "tmpfs": {"size": "1024"}},
                ],
                "networks": {"default": None},
                "depends_on": {"db": {"condition": "service_started", "required": True}},
                "healthcheck": {"test": ["CMD-SHELL", "true"], "interval": "10s"},
                "restart": "always",
                "deploy": {"resources": {"limits": {"memory": "268435456"}}},
                "stop_signal": "SIGINT",
                "stop_grace_period": "1m30s",
            },
        },
        "networks": {"default": {"name": "demo_default"}},
    }


def test_secret_values_are_never_printed():
    stack = load(EXAMPLES["everything"])
    assert "s3cret" not in to_yaml(stack) and "s3cret" not in to_json(stack)
    assert to_compose(stack)["secrets"]["fromenv"] == {"name": "demo_fromenv", "environment": "TOKEN"}


def test_yaml_quotes_what_yaml_1_2_would_misread():
    stack = load(EXAMPLES["everything"])
    text = to_yaml(stack)
    assert 'D: "1e3"' in text and 'E: "0o17"' in text
    env = parse_yaml(text, "r.yaml")["services"]["web"]["environment"]
    assert env["D"] == "1e3" and env["E"] == "0o17" and env["F"] == "no" and env["G"] == "010"
    assert env["C"] == "multi\nline"


def test_yaml_is_block_style_and_json_is_json():
    stack = load(EXAMPLES["everything"])
    assert "{" not in to_yaml(stack).replace("{}", "")
    assert json.loads(to_json(stack)) == to_compose(stack)


def test_tmpfs_order_is_kept_when_flags_force_the_short_syntax():
    stack = load("""
        services:
          web:
            image: x
            volumes: [/a, {type: tmpfs, target: /plain}]
            tmpfs: ["/flags:noexec", /after]
    """)
    rendered = to_compose(stack)["services"]["web"]
    assert rendered["tmpfs"] == ["/plain", "/flags:noexec", "/after"]
    assert reload(to_yaml(stack), stack) == stack


def test_a_disabled_healthcheck_is_not_no_healthcheck():
    stack = load("services:\n  a: {image: x, healthcheck: {test: [NONE]}}\n  b: {image: x}\n"
                 "  c: {image: x, healthcheck: {retries: 2}}\n")
    out = to_compose(stack)["services"]
    assert out["a"]["healthcheck"] == {"disable": True} and "healthcheck" not in out["b"]
    assert out["c"]["healthcheck"] == {"retries": 2}  # the image's test, with its own retries
    assert reload(to_yaml(stack), stack) == stack


def test_model_built_by_hand_round_trips():
    """Defaults the parser never produces on its own (no networks, an empty command) still render."""
    svc = Service(name="w", image="x", command=(), network_mode="none",
                  volumes=(Mount(type="tmpfs", target="/t", tmpfs_options=("nodev",)),))
    stack = Stack(name="demo", project_dir="/proj", files=("c.yaml",), services=FrozenMap({"w": svc}))
    assert reload(to_yaml(stack), stack) == stack


EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "compose"
EXAMPLE_TARGETS = sorted(EXAMPLE_DIR.glob("*.yaml")) + [EXAMPLE_DIR / "extends", EXAMPLE_DIR / "multi"]


@pytest.mark.parametrize("target", EXAMPLE_TARGETS, ids=lambda p: p.name)
def test_examples_round_trip_through_the_loader(target, tmp_path):
    """`pysup config` output for each example loads back (through interpolation) to the same stack."""
    if target.is_dir():
        stack = load_stack(None, cwd=str(target), environ={}).stack
    else:
        stack = load_stack([str(target)], environ={}).stack
    out = tmp_path / "rendered.yaml"
    out.write_text(to_yaml(stack, escape_interpolation=True))
    again = load_stack([str(out)], project_dir=stack.project_dir, environ={}).stack
    assert attrs.evolve(again, files=stack.files, sources=stack.sources) == stack
