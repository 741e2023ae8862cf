"""Any stack the loader accepts either exports to valid manifests or is refused with located
problems; warnings always name a key. Generated stacks (hypothesis), validated like the examples."""

from __future__ import annotations

import os
import tempfile

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from supervisor.config.load import load
from supervisor.errors import SpecError
from supervisor.export import kubernetes

from .k8s import consistency_errors, schema_errors

NAMES = ["web", "db", "My_Cache", "job-1", "2nd"]
names = st.sampled_from(NAMES)
words = st.text(alphabet="abcxyz$( )'", min_size=1, max_size=8)
env_keys = st.sampled_from(["A", "B_C", "PATH", "X1"])
durations = st.sampled_from(["500ms", "1s", "2s", "10s", "1m30s"])
ports = st.one_of(
    st.integers(1, 65535).map(str),
    st.tuples(st.integers(1, 65535), st.integers(1, 65535)).map(lambda p: f"{p[0]}:{p[1]}"),
    st.tuples(st.integers(1, 65535), st.sampled_from(["tcp", "udp"])).map(lambda p: f"{p[0]}/{p[1]}"),
    st.fixed_dictionaries({"target": st.integers(1, 65535)},
                          optional={"published": st.integers(1, 65535).map(str),
                                    "name": st.sampled_from(["http", "Metrics_Port", "a-very-long-port-name"]),
                                    "protocol": st.sampled_from(["tcp", "udp"])}),
)
volumes = st.one_of(
    st.tuples(st.sampled_from(["data", "logs", "./src", "/var/x"]), st.sampled_from(["/a", "/b", "/c"]),
              st.sampled_from(["", ":ro"])).map(lambda v: f"{v[0]}:{v[1]}{v[2]}"),
    st.sampled_from(["/anon1", "/anon2"]),
)
healthcheck = st.fixed_dictionaries(
    {"test": st.one_of(st.lists(words, min_size=1, max_size=2).map(lambda t: ["CMD", *t]), words,
                       st.just(["NONE"]))},
    optional={"interval": durations, "timeout": durations, "retries": st.integers(0, 5),
              "start_period": durations, "start_interval": durations})
service = st.fixed_dictionaries({"image": st.sampled_from(["nginx", "host", "redis:7"])}, optional={
    "command": st.lists(words, min_size=1, max_size=3),
    "entrypoint": st.lists(words, min_size=1, max_size=2),
    "environment": st.dictionaries(env_keys, words, max_size=3),
    "labels": st.dictionaries(st.sampled_from(["a", "b.c/d", "x y"]), words, max_size=2),
    "ports": st.lists(ports, max_size=3),
    "expose": st.lists(st.integers(1, 65535).map(str), max_size=2),
    "volumes": st.lists(volumes, max_size=3, unique=True),
    "tmpfs": st.sampled_from(["/tmp", "/run:size=1m"]),
    "restart": st.sampled_from(["no", "always", "on-failure", "on-failure:2", "unless-stopped"]),
    "user": st.sampled_from(["0", "1000:1000", "nobody", "1:x"]),
    "cap_add": st.lists(st.sampled_from(["NET_ADMIN", "SYS_ADMIN", "ALL"]), max_size=2, unique=True),
    "cap_drop": st.lists(st.sampled_from(["ALL", "CHOWN"]), max_size=2, unique=True),
    "privileged": st.booleans(),
    "read_only": st.booleans(),
    "init": st.booleans(),
    "security_opt": st.lists(st.sampled_from(["no-new-privileges:true", "seccomp=unconfined", "apparmor=x"]),
                             max_size=2, unique=True),
    "stop_signal": st.sampled_from(["SIGTERM", "SIGINT", "SIGUSR1", "9"]),
    "stop_grace_period": durations,
    "mem_limit": st.sampled_from(["16m", "1g", "1000000"]),
    "mem_reservation": st.sampled_from(["8m", "2g"]),
    "cpus": st.sampled_from([0.25, 1, 1.5]),
    "cpu_shares": st.sampled_from([2, 512, 4096]),
    "pids_limit": st.sampled_from([-1, 64]),
    "network_mode": st.sampled_from(["host", "none"]),
    "pid": st.just("host"),
    "hostname": st.sampled_from(["box", "Box_1"]),
    "sysctls": st.just({"net.core.somaxconn": 1024}),
    "healthcheck": healthcheck,
    "deploy": st.fixed_dictionaries({}, optional={
        "replicas": st.integers(0, 4),
        "update_config": st.fixed_dictionaries({}, optional={
            "parallelism": st.integers(0, 3), "order": st.sampled_from(["start-first", "stop-first"]),
            "delay": durations, "failure_action": st.sampled_from(["pause", "rollback"])}),
    }),
    "x-pysup": st.fixed_dictionaries({}, optional={"restart_on_unhealthy": st.booleans(),
                                                   "userns": st.booleans()}),
})


@st.composite
def stacks(draw):
    services = draw(st.dictionaries(names, service, min_size=1, max_size=4))
    keys = list(services)
    for name, svc in services.items():
        others = [k for k in keys if k != name and keys.index(k) < keys.index(name)]  # no cycles
        if others and draw(st.booleans()):
            dep = draw(st.sampled_from(others))
            cond = draw(st.sampled_from(["service_started", "service_healthy", "service_completed_successfully"]))
            svc["depends_on"] = {dep: {"condition": cond}}
            if cond == "service_healthy":
                services[dep]["healthcheck"] = {"test": ["CMD", "true"]}
        if draw(st.booleans()):
            svc["secrets"] = ["token"]
        if draw(st.booleans()):
            svc["configs"] = [{"source": "conf", "target": "/etc/conf"}]
        if "network_mode" not in svc and draw(st.booleans()):
            svc["networks"] = draw(st.lists(st.sampled_from(["front", "back"]), min_size=1, unique=True))
    return {"name": "prop", "services": services, "volumes": {"data": {}, "logs": {}},
            "networks": {"front": {}, "back": {}}, "secrets": {"token": {"file": "./token.txt"}},
            "configs": {"conf": {"content": "k = v\n"}}}


options = st.builds(kubernetes.Options, kube_version=st.sampled_from(["1.27", "1.33", "1.37"]),
                    publish=st.sampled_from(["LoadBalancer", "NodePort"]), allow_hostpath=st.booleans(),
                    network_policies=st.booleans(), namespace=st.sampled_from([None, "ns"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stacks(), options)
def test_a_loaded_stack_exports_valid_manifests_or_located_refusals(doc, opts):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "compose.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(doc, f)
        with open(os.path.join(d, "token.txt"), "w") as f:
            f.write("t0ken\n")
        try:
            stack = load([path], environ={}).stack
        except SpecError:
            return  # not the exporter's business
        try:
            out = kubernetes.export(stack, opts)
        except kubernetes.ExportError as exc:
            assert exc.problems
            for p in exc.problems:
                assert p.path[:1] == ("services",) and p.path[1] in stack.services, p
            return
    assert schema_errors(out.manifests, opts.kube_version) == []
    assert consistency_errors(out.manifests) == []
    for w in out.warnings:
        assert w.path and w.path[0] in ("services", "volumes", "secrets", "configs", "networks", "x-pysup"), w
