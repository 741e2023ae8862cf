"""Tests for supervisor/config/merge.py: `-f` merging, !reset/!override, extends and include.

The merge tables mirror compose-go's override/merge_*_test.go cases (same inputs, same results,
written in the mapping syntax pysup's merge produces for list-or-dict attributes).
"""

from __future__ import annotations

import copy
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from supervisor.config.merge import (
    enforce_unicity,
    merge_all,
    merge_files,
    rebase_paths,
    resolve_extends,
    resolve_include,
    strip_reset,
)
from supervisor.config.source import Map, Seq, locate, locate_key, parse_yaml, read_yaml
from supervisor.errors import Location, SpecError


def y(text: str, file: str = "base.yaml") -> Map:
    return parse_yaml(textwrap.dedent(text), file)


def web(tree: Map, name: str = "web") -> Any:
    return tree["services"][name]


def has_tags(value: Any) -> bool:
    if isinstance(value, Map):
        return bool(value.tags) or any(has_tags(v) for v in value.values())
    if isinstance(value, list):
        return any(has_tags(v) for v in value)
    return False


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


def one_problem(exc: pytest.ExceptionInfo[SpecError]):
    assert len(exc.value.problems) == 1, exc.value.problems
    return exc.value.problems[0]


# --- merge_files: compose-go merge special cases --------------------------------------------------

SERVICE_CASES = [
    pytest.param("image: foo", "image: bar", {"image": "bar"}, id="scalar-override"),
    pytest.param("command: [echo, foo]", "command: [echo, bar]", {"command": ["echo", "bar"]},
                 id="command-replaced"),
    pytest.param("command: [echo, foo]", "command: echo bar", {"command": "echo bar"}, id="command-string"),
    pytest.param("entrypoint: [sh, -c]", "entrypoint: [bash]", {"entrypoint": ["bash"]}, id="entrypoint-replaced"),
    pytest.param("healthcheck: {test: [CMD, a], interval: 5s}", "healthcheck: {test: [CMD, b]}",
                 {"healthcheck": {"test": ["CMD", "b"], "interval": "5s"}}, id="healthcheck-test-replaced"),
    pytest.param("environment: [A=1, B=2]", "environment: {B: 3, C: x}",
                 {"environment": {"A": "1", "B": 3, "C": "x"}}, id="environment-list-then-map"),
    pytest.param("environment: {A: 1, B: 2}", "environment: [B=3, C, D=]",
                 {"environment": {"A": 1, "B": "3", "C": None, "D": ""}}, id="environment-map-then-list"),
    pytest.param("environment: [A=1]", "environment: [A]", {"environment": {"A": None}},
                 id="environment-unset-wins"),
    pytest.param("labels: [a=1, b=2]", "labels: [b=3, a=4]", {"labels": {"a": "4", "b": "3"}}, id="labels"),
    pytest.param("annotations: {a: 1}", "annotations: [b=2]", {"annotations": {"a": 1, "b": "2"}},
                 id="annotations"),
    pytest.param("sysctls: [net.core.somaxconn=1024]", "sysctls: {net.ipv4.tcp_syncookies: 0}",
                 {"sysctls": {"net.core.somaxconn": "1024", "net.ipv4.tcp_syncookies": 0}}, id="sysctls"),
    pytest.param("build: {context: ., args: [A=1]}", "build: {args: {A: 2, B: 3}}",
                 {"build": {"context": ".", "args": {"A": 2, "B": 3}}}, id="build-args"),
    pytest.param("build: ./dir", "build: {dockerfile: Other}",
                 {"build": {"context": "./dir", "dockerfile": "Other"}}, id="build-string-then-map"),
    pytest.param("build: {context: ., dockerfile: A}", "build: ./other",
                 {"build": {"context": "./other", "dockerfile": "A"}}, id="build-map-then-string"),
    pytest.param("extra_hosts: [a=1.1.1.1, b=2.2.2.2]", "extra_hosts: [b=2.2.2.2, a=3.3.3.3]",
                 {"extra_hosts": ["a=1.1.1.1", "b=2.2.2.2", "a=3.3.3.3"]}, id="extra-hosts-dedup"),
    pytest.param("extra_hosts: {a: 1.1.1.1}", "extra_hosts: [b:2.2.2.2]",
                 {"extra_hosts": ["a=1.1.1.1", "b:2.2.2.2"]}, id="extra-hosts-map-then-list"),
    pytest.param("extra_hosts: [a=1.1.1.1]", "extra_hosts: {a: [1.1.1.1, '::1']}",
                 {"extra_hosts": ["a=1.1.1.1", "a=::1"]}, id="extra-hosts-multiple-ips"),
    pytest.param("ports: ['8080:80', 9000]", "ports: ['8080:80', '8443:443', 9000]",
                 {"ports": ["8080:80", 9000, "8443:443"]}, id="ports-appended-dedup"),
    pytest.param("ports: [{target: 80, published: '8080'}]",
                 "ports: [{target: 80, published: '8080', host_ip: 0.0.0.0, protocol: tcp, mode: host}, "
                 "{target: 80, published: '8080', protocol: udp}]",
                 {"ports": [{"target": 80, "published": "8080", "host_ip": "0.0.0.0", "protocol": "tcp",
                             "mode": "host"},
                            {"target": 80, "published": "8080", "protocol": "udp"}]}, id="ports-long-syntax"),
    pytest.param("expose: ['80', 443]", "expose: [80, '8080']", {"expose": [80, 443, "8080"]}, id="expose"),
    pytest.param("dns: 1.1.1.1", "dns: [8.8.8.8, 1.1.1.1]", {"dns": ["1.1.1.1", "8.8.8.8"]}, id="dns"),
    pytest.param("dns_opt: [ndots=1, use-vc]", "dns_opt: [ndots=2]", {"dns_opt": ["ndots=2", "use-vc"]},
                 id="dns-opt-by-name"),
    pytest.param("dns_search: a.example", "dns_search: b.example",
                 {"dns_search": ["a.example", "b.example"]}, id="dns-search"),
    pytest.param("volumes: ['foo:/work', './src:/src:ro']", "volumes: ['bar:/work', {type: tmpfs, target: /tmp}]",
                 {"volumes": ["bar:/work", "./src:/src:ro", {"type": "tmpfs", "target": "/tmp"}]},
                 id="volumes-by-target"),
    pytest.param("volumes: [{type: bind, source: ./a, target: /data}]", "volumes: ['/b:/data:ro']",
                 {"volumes": ["/b:/data:ro"]}, id="volumes-long-then-short"),
    pytest.param("secrets: [a, b]", "secrets: [{source: other, target: a}, c]",
                 {"secrets": [{"source": "other", "target": "a"}, "b", "c"]}, id="secrets-by-target"),
    pytest.param("configs: [a]", "configs: [{source: x, target: /a, mode: 0440}]",
                 {"configs": [{"source": "x", "target": "/a", "mode": 0o440}]}, id="configs-by-target"),
    pytest.param("devices: ['/dev/a:/dev/x', /dev/y]", "devices: ['/dev/b:/dev/x:rwm', {source: /dev/y}]",
                 {"devices": ["/dev/b:/dev/x:rwm", {"source": "/dev/y"}]}, id="devices-by-target"),
    pytest.param("networks: [front, back]", "networks: [front]", {"networks": {"front": None, "back": None}},
                 id="networks-lists"),
    pytest.param("networks: {front: {aliases: [a1, a2], link_local_ips: [1.1.1.1]}}",
                 "networks: {front: {aliases: [a3, a1], link_local_ips: [1.1.1.2, 1.1.1.1]}}",
                 {"networks": {"front": {"aliases": ["a1", "a2", "a3"],
                                         "link_local_ips": ["1.1.1.1", "1.1.1.2"]}}}, id="networks-aliases"),
    pytest.param("networks: {front: {aliases: [a]}}", "networks: [front, back]",
                 {"networks": {"front": {"aliases": ["a"]}, "back": None}}, id="networks-map-then-list"),
    pytest.param("depends_on: [db]", "depends_on: {cache: {condition: service_healthy}}",
                 {"depends_on": {"db": {"condition": "service_started", "required": True},
                                 "cache": {"condition": "service_healthy"}}}, id="depends-on-list-then-map"),
    pytest.param("depends_on: {db: {condition: service_healthy, restart: true}}", "depends_on: [db]",
                 {"depends_on": {"db": {"condition": "service_started", "required": True, "restart": True}}},
                 id="depends-on-map-then-list"),
    pytest.param("models: [llm]", "models: {llm: {endpoint_var: URL}}",
                 {"models": {"llm": {"endpoint_var": "URL"}}}, id="models"),
    pytest.param("ulimits: {nofile: {soft: 20000, hard: 40000}, nproc: 65535, locks: {soft: 1, hard: 2}}",
                 "ulimits: {nofile: {soft: 10000}, nproc: {soft: 5}, locks: 7}",
                 {"ulimits": {"nofile": {"soft": 10000, "hard": 40000}, "nproc": {"soft": 5}, "locks": 7}},
                 id="ulimits-per-key"),
    pytest.param("logging: {driver: json-file, options: {max-size: 1m}}", "logging: {options: {max-file: '3'}}",
                 {"logging": {"driver": "json-file", "options": {"max-size": "1m", "max-file": "3"}}},
                 id="logging-same-driver-merges"),
    pytest.param("logging: {driver: json-file, options: {max-size: 1m}}",
                 "logging: {driver: syslog, options: {tag: x}}",
                 {"logging": {"driver": "syslog", "options": {"tag": "x"}}}, id="logging-other-driver-replaces"),
    pytest.param("env_file: a.env", "env_file: [b.env, {path: a.env, required: false}]",
                 {"env_file": [{"path": "a.env", "required": False}, "b.env"]}, id="env-file"),
    pytest.param("label_file: a.labels", "label_file: [b.labels, a.labels]",
                 {"label_file": ["a.labels", "b.labels"]}, id="label-file"),
    pytest.param("tmpfs: /run", "tmpfs: [/tmp, /run]", {"tmpfs": ["/run", "/tmp"]}, id="tmpfs"),
    pytest.param("cap_add: [NET_ADMIN]", "cap_add: [SYS_ADMIN, NET_ADMIN]", {"cap_add": ["NET_ADMIN", "SYS_ADMIN"]},
                 id="cap-add"),
    pytest.param("profiles: [a]", "profiles: [a, b]", {"profiles": ["a", "b"]}, id="profiles"),
    pytest.param("links: [db, cache:c]", "links: [db]", {"links": ["db", "cache:c"]}, id="links"),
    pytest.param("volumes_from: [a]", "volumes_from: [a, b]", {"volumes_from": ["a", "b"]}, id="volumes-from"),
    pytest.param("security_opt: [a]", "security_opt: [b]", {"security_opt": ["a", "b"]}, id="plain-list-appends"),
    pytest.param("deploy: {labels: [a=1], resources: {limits: {cpus: '1'}}}",
                 "deploy: {labels: {a: 2}, resources: {limits: {memory: 1g}}}",
                 {"deploy": {"labels": {"a": 2}, "resources": {"limits": {"cpus": "1", "memory": "1g"}}}},
                 id="deploy-nested"),
    pytest.param("x-pysup: {rootfs: ./a, restart: {max: 3}}", "x-pysup: {restart: {base: 1s}}",
                 {"x-pysup": {"rootfs": "./a", "restart": {"max": 3, "base": "1s"}}}, id="extension-merged"),
    pytest.param("environment: {A: 1}\nlabels: [a=1]", "environment:\nlabels:",
                 {"environment": {"A": 1}, "labels": ["a=1"]}, id="empty-override-keeps-base"),
]


@pytest.mark.parametrize(("base", "over", "expected"), SERVICE_CASES)
def test_merge_service_attribute(base: str, over: str, expected: dict) -> None:
    indent = " " * 4
    b = y("services:\n  web:\n" + textwrap.indent(base, indent) + "\n", "base.yaml")
    o = y("services:\n  web:\n" + textwrap.indent(over, indent) + "\n", "override.yaml")
    assert web(merge_files(b, o)) == expected


def test_list_or_dict_keys_keep_first_position() -> None:
    b = y("services: {web: {environment: [A=1, B=2, C=3]}}")
    o = y("services: {web: {environment: {D: 4, B: 5}}}", "override.yaml")
    env = web(merge_files(b, o))["environment"]
    assert list(env.items()) == [("A", "1"), ("B", 5), ("C", "3"), ("D", 4)]


def test_top_level_merge() -> None:
    b = y("""
        name: one
        services:
          web: {image: a}
        volumes:
          data: {driver: local}
        x-common: {a: 1}
    """)
    o = y("""
        name: two
        services:
          db: {image: b}
        volumes:
          data: {labels: [a=1]}
          logs: {}
        x-common: {b: 2}
    """, "override.yaml")
    assert merge_files(b, o) == {
        "name": "two",
        "services": {"web": {"image": "a"}, "db": {"image": "b"}},
        "volumes": {"data": {"driver": "local", "labels": ["a=1"]}, "logs": {}},
        "x-common": {"a": 1, "b": 2},
    }


def test_network_ipam_config_merged_by_subnet() -> None:
    b = y("""
        networks:
          net1:
            ipam:
              config:
                - subnet: 172.28.0.0/16
                  ip_range: 172.28.5.0/24
                  aux_addresses: {host1: 172.28.1.5, host3: 172.28.1.7}
                - subnet: 10.0.0.0/8
              options: {foo: bar}
            labels: {com.example.department: Finance}
    """)
    o = y("""
        networks:
          net1:
            ipam:
              config:
                - subnet: 172.28.0.0/16
                  ip_range: 172.28.5.1/24
                  aux_addresses: {host1: 172.28.1.5, host4: 172.28.1.10}
                - subnet: 172.29.0.0/16
              options: {bar: foo}
            labels: [com.example.department-new=New]
          net2:
    """, "override.yaml")
    merged = merge_files(b, o)["networks"]
    assert merged == {
        "net1": {
            "ipam": {
                "config": [
                    {"subnet": "172.28.0.0/16", "ip_range": "172.28.5.1/24",
                     "aux_addresses": {"host1": "172.28.1.5", "host3": "172.28.1.7", "host4": "172.28.1.10"}},
                    {"subnet": "10.0.0.0/8"},
                    {"subnet": "172.29.0.0/16"},
                ],
                "options": {"foo": "bar", "bar": "foo"},
            },
            "labels": {"com.example.department": "Finance", "com.example.department-new": "New"},
        },
        "net2": None,
    }


def test_single_file_unicity() -> None:
    tree = y("""
        services:
          web:
            ports: ['80:80', '80:80']
            volumes: ['a:/data', 'b:/data']
            environment: [A=1, A=2]
            group_add: [wheel, wheel]
    """)
    assert web(merge_all([tree])) == {
        "ports": ["80:80"], "volumes": ["b:/data"], "environment": ["A=2"], "group_add": ["wheel"],
    }
    assert enforce_unicity(tree) == merge_all([tree])


def test_merge_all_folds_in_order() -> None:
    a = y("services: {web: {image: a, ports: ['1:1']}}", "a.yaml")
    b = y("services: {web: {image: b, ports: ['2:2']}}", "b.yaml")
    c = y("services: {web: {ports: !reset []}}", "c.yaml")
    assert merge_all([a, b]) == {"services": {"web": {"image": "b", "ports": ["1:1", "2:2"]}}}
    assert merge_all([a, b, c]) == {"services": {"web": {"image": "b"}}}
    with pytest.raises(ValueError):
        merge_all([])


def test_inputs_are_not_modified() -> None:
    b = y("services: {web: {environment: [A=1], ports: ['1:1'], networks: [n]}}")
    o = y("services: {web: {environment: {B: 2}, ports: ['2:2'], networks: {n: {aliases: [x]}}}}", "o.yaml")
    before_b, before_o = copy.deepcopy(b), copy.deepcopy(o)
    merge_files(b, o)
    assert b == before_b and o == before_o
    assert isinstance(web(b)["environment"], Seq)


# --- locations ------------------------------------------------------------------------------------

def test_locations_point_at_the_file_that_supplied_each_value() -> None:
    b = y("""
        services:
          web:
            image: a
            ports: ['1:1']
            environment: [A=1, B=2]
            deploy: {replicas: 1}
    """, "base.yaml")
    o = y("""
        services:
          web:
            image: b
            ports: ['2:2']
            environment:
              - B=3
            user: nobody
    """, "override.yaml")
    m = merge_files(b, o)
    assert locate(m, ("services", "web", "image")) == Location("override.yaml", 4, 12)
    assert locate_key(m, ("services", "web", "user")) == Location("override.yaml", 8, 5)
    assert locate(m, ("services", "web", "ports", 0)) == Location("base.yaml", 5, 13)
    assert locate(m, ("services", "web", "ports", 1)) == Location("override.yaml", 5, 13)
    assert locate(m, ("services", "web", "environment", "A")) == Location("base.yaml", 6, 19)
    assert locate(m, ("services", "web", "environment", "B")) == Location("override.yaml", 7, 9)
    # untouched and merged containers keep their first definition
    assert locate(m, ("services", "web", "deploy", "replicas")) == Location("base.yaml", 7, 24)
    assert locate_key(m, ("services", "web")) == Location("base.yaml", 3, 3)


def test_unicity_keeps_the_location_of_the_winning_entry() -> None:
    b = y("services:\n  web:\n    volumes: ['a:/data', 'x:/x']\n", "base.yaml")
    o = y("services:\n  web:\n    volumes:\n      - b:/data\n", "override.yaml")
    m = merge_files(b, o)
    assert web(m)["volumes"] == ["b:/data", "x:/x"]
    assert locate(m, ("services", "web", "volumes", 0)) == Location("override.yaml", 4, 9)
    assert locate(m, ("services", "web", "volumes", 1)) == Location("base.yaml", 3, 26)


@pytest.mark.parametrize(("base", "over", "message"), [
    ("ports: ['1:1']", "ports: {a: b}", "cannot merge a mapping into the list at base.yaml:3:12"),
    ("deploy: {replicas: 1}", "deploy: [x]", "cannot merge a list into the mapping at base.yaml:3:13"),
    ("volumes: ['a:/a']", "volumes: a:/a", "cannot merge a single value into the list at base.yaml:3:14"),
    ("dns: [1.1.1.1]", "dns: {a: b}", "cannot merge a mapping into the list at base.yaml:3:10"),
])
def test_unmergeable_values_are_located_errors(base: str, over: str, message: str) -> None:
    b = y(f"services:\n  web:\n    {base}\n", "base.yaml")
    o = y(f"services:\n  web:\n    x: 1\n    {over}\n", "override.yaml")
    with pytest.raises(SpecError) as exc:
        merge_files(b, o)
    p = one_problem(exc)
    assert p.message == message
    assert p.path == ("services", "web", over.split(":")[0])
    assert p.location is not None and p.location.file == "override.yaml" and p.location.line == 4


def test_several_mismatches_reported_together() -> None:
    b = y("services: {a: {ports: ['1:1']}, b: {deploy: {}}}")
    o = y("services: {a: {ports: x}, b: {deploy: [y]}}", "o.yaml")
    with pytest.raises(SpecError) as exc:
        merge_files(b, o)
    assert [p.path for p in exc.value.problems] == [("services", "a", "ports"), ("services", "b", "deploy")]


# --- !reset and !override -------------------------------------------------------------------------

RESET_CASES = [
    pytest.param("ports: ['8080:80']\nimage: a", "ports: !reset []", {"image": "a"}, id="reset-list"),
    pytest.param("environment: {FOO: BAR, KEEP: 1}", "environment: {FOO: !reset null}", {"environment": {"KEEP": 1}},
                 id="reset-mapping-entry"),
    pytest.param("environment: [FOO=BAR, KEEP=1]", "environment: {FOO: !reset null}", {"environment": {"KEEP": "1"}},
                 id="reset-entry-of-list-syntax"),
    pytest.param("image: a", "build: !reset {context: .}", {"image": "a"}, id="reset-absent-key"),
    pytest.param("ports: ['8080:80']", "ports: !override ['8443:443']", {"ports": ["8443:443"]},
                 id="override-list"),
    pytest.param("environment: {A: 1, B: 2}", "environment: !override [C=3]", {"environment": ["C=3"]},
                 id="override-mapping"),
    pytest.param("build: {context: ., args: {A: 1}}", "build: {args: !override {B: 2}}",
                 {"build": {"context": ".", "args": {"B": 2}}}, id="override-nested"),
    pytest.param("command: a", "healthcheck: {test: [CMD, x], interval: !reset 1s}",
                 {"command": "a", "healthcheck": {"test": ["CMD", "x"]}}, id="reset-inside-new-value"),
]


@pytest.mark.parametrize(("base", "over", "expected"), RESET_CASES)
def test_reset_and_override(base: str, over: str, expected: dict) -> None:
    b = y("services:\n  web:\n" + textwrap.indent(base, "    ") + "\n")
    o = y("services:\n  web:\n" + textwrap.indent(over, "    ") + "\n", "override.yaml")
    merged = merge_files(b, o)
    assert web(merged) == expected
    assert not has_tags(merged)


def test_reset_a_whole_service() -> None:
    b = y("services: {web: {image: a}, db: {image: b}}")
    o = y("services: {db: !reset null}", "o.yaml")
    assert merge_files(b, o) == {"services": {"web": {"image": "a"}}}


def test_override_keeps_the_override_location() -> None:
    b = y("services:\n  web:\n    ports: ['1:1']\n")
    o = y("services:\n  web:\n    ports: !override\n      - '2:2'\n", "override.yaml")
    m = merge_files(b, o)
    assert locate(m, ("services", "web", "ports")) == Location("override.yaml", 3, 12)  # the tag
    assert locate(m, ("services", "web", "ports", 0)) == Location("override.yaml", 4, 9)


def test_strip_reset_single_file() -> None:
    tree = y("""
        services:
          web:
            image: a
            ports: !reset ['1:1']
            environment: {A: !reset x, B: 1}
            labels: !override {a: b}
            volumes:
              - {type: bind, source: ., target: /x, bind: {create_host_path: !reset true}}
          db: !reset {image: b}
    """)
    stripped = strip_reset(tree)
    assert stripped == {"services": {"web": {
        "image": "a", "environment": {"B": 1}, "labels": {"a": "b"},
        "volumes": [{"type": "bind", "source": ".", "target": "/x", "bind": {}}],
    }}}
    assert not has_tags(stripped)
    assert tree["services"]["web"].tags == {"ports": "reset", "labels": "override"}  # input untouched
    assert locate(stripped, ("services", "web", "image")) == Location("base.yaml", 4, 12)


def test_merge_files_strips_resets_left_in_the_base() -> None:
    b = y("services: {web: {image: a, ports: !reset ['1:1']}}")
    o = y("services: {web: {user: x}}", "o.yaml")
    assert merge_files(b, o) == {"services": {"web": {"image": "a", "user": "x"}}}


# --- extends --------------------------------------------------------------------------------------

def no_load(path: str) -> Map:
    raise AssertionError(f"unexpected load of {path}")


def test_extends_in_one_file() -> None:
    tree = y("""
        services:
          base:
            image: app
            command: [run]
            environment: [A=1]
            ports: ['80:80']
          web:
            extends: base
            command: [serve]
            environment: {B: 2}
            ports: ['443:443']
          worker:
            extends: {service: web}
            environment: [A=3]
    """)
    out = resolve_extends(tree, file="/p/compose.yaml", load=no_load)
    services = out["services"]
    assert services["base"] == tree["services"]["base"]
    assert services["web"] == {"image": "app", "command": ["serve"], "environment": {"A": "1", "B": 2},
                               "ports": ["80:80", "443:443"]}
    assert services["worker"] == {"image": "app", "command": ["serve"], "environment": {"A": "3", "B": 2},
                                  "ports": ["80:80", "443:443"]}
    assert "extends" in tree["services"]["web"]  # input untouched


def test_extends_chain_is_order_independent() -> None:
    tree = y("""
        services:
          c: {extends: b, user: c}
          b: {extends: a, hostname: b}
          a: {image: a}
    """)
    out = resolve_extends(tree, file="/p/compose.yaml", load=no_load)["services"]
    assert out["c"] == {"image": "a", "hostname": "b", "user": "c"}


def test_extends_inherits_dependencies_like_compose_v2() -> None:
    tree = y("""
        services:
          base: {image: a, depends_on: [db], links: [db], volumes_from: [db]}
          web: {extends: base, depends_on: {cache: {condition: service_healthy}}}
          db: {image: db}
          cache: {image: c}
    """)
    out = resolve_extends(tree, file="/p/compose.yaml", load=no_load)["services"]["web"]
    assert out["depends_on"] == {"db": {"condition": "service_started", "required": True},
                                 "cache": {"condition": "service_healthy"}}
    assert out["links"] == ["db"] and out["volumes_from"] == ["db"]


def test_extends_locations() -> None:
    tree = y("""
        services:
          base:
            image: app
            user: root
          web:
            extends: base
            user: nobody
    """, "/p/compose.yaml")
    out = resolve_extends(tree, file="/p/compose.yaml", load=no_load)
    assert locate(out, ("services", "web", "image")) == Location("/p/compose.yaml", 4, 12)
    assert locate(out, ("services", "web", "user")) == Location("/p/compose.yaml", 8, 11)
    assert locate_key(out, ("services", "web")) == Location("/p/compose.yaml", 6, 3)


def test_extends_reset_applies_to_base_and_to_earlier_files() -> None:
    first = y("services: {web: {image: old, ports: ['1:1'], environment: {FOO: x}}}", "first.yaml")
    second = y("""
        services:
          base: {image: app, ports: ['2:2'], environment: {FOO: y, BAR: z}}
          web:
            extends: base
            ports: !reset []
            environment: {FOO: !reset null}
    """, "second.yaml")
    resolved = resolve_extends(second, file="/p/second.yaml", load=no_load)
    assert strip_reset(resolved)["services"]["web"] == {"image": "app", "environment": {"BAR": "z"}}
    # compose-go applies a file's reset paths to what earlier -f files defined, too
    assert merge_all([first, resolved])["services"]["web"] == {"image": "app", "environment": {"BAR": "z"}}


def test_extends_override_tag() -> None:
    tree = y("""
        services:
          base: {image: app, ports: ['1:1']}
          web: {extends: base, ports: !override ['2:2']}
    """)
    out = resolve_extends(tree, file="/p/c.yaml", load=no_load)
    assert strip_reset(out)["services"]["web"] == {"image": "app", "ports": ["2:2"]}
    earlier = y("services: {web: {ports: ['0:0']}}", "earlier.yaml")
    assert merge_all([earlier, out])["services"]["web"]["ports"] == ["2:2"]


def test_extends_from_another_file_rebases_paths(tmp_path: Path) -> None:
    main = write(tmp_path / "compose.yaml", """
        services:
          web:
            extends:
              file: common/base.yaml
              service: app
            env_file: local.env
            volumes: ['./here:/here']
    """)
    write(tmp_path / "common" / "base.yaml", """
        services:
          app:
            build: .
            env_file: [.env, {path: ./x.env, required: false}, /abs.env]
            label_file: labels.txt
            volumes:
              - ./data:/data
              - named:/named
              - /abs:/abs
              - ~/home:/home
              - ../up:/up:ro
              - /anon
              - {type: bind, source: ./src, target: /src}
              - {type: volume, source: vol, target: /vol}
            x-pysup: {rootfs: ./rootfs}
            develop: {watch: [{path: ./w, action: sync, target: /w}]}
    """)
    calls: list[str] = []

    def load(path: str) -> Map:
        calls.append(path)
        return read_yaml(path)

    out = resolve_extends(read_yaml(main), file=main, load=load)["services"]["web"]
    common = str(tmp_path / "common")
    assert calls == [os.path.join(common, "base.yaml")]
    assert out["build"] == common
    assert out["env_file"] == [f"{common}/.env", {"path": f"{common}/x.env", "required": False}, "/abs.env",
                               "local.env"]
    assert out["label_file"] == f"{common}/labels.txt"
    assert out["volumes"] == [
        f"{common}/data:/data", "named:/named", "/abs:/abs", "~/home:/home", f"{tmp_path}/up:/up:ro", "/anon",
        {"type": "bind", "source": f"{common}/src", "target": "/src"},
        {"type": "volume", "source": "vol", "target": "/vol"},
        "./here:/here",  # the extending service's own paths stay relative to its project
    ]
    assert out["x-pysup"] == {"rootfs": f"{common}/rootfs"}
    assert out["develop"]["watch"][0]["path"] == f"{common}/w"
    assert "extends" not in out
    # inherited values point at the file that wrote them
    assert locate(out, ("build",)) == Location(os.path.join(common, "base.yaml"), 4, 12)


def test_extends_across_several_files(tmp_path: Path) -> None:
    main = write(tmp_path / "compose.yaml", """
        services:
          web: {extends: {file: common/base.yaml, service: app2}, user: web}
    """)
    write(tmp_path / "common" / "base.yaml", """
        services:
          app: {extends: {file: ../lib/core.yaml, service: core}, hostname: app}
          app2: {extends: app, environment: [B=2]}
    """)
    write(tmp_path / "lib" / "core.yaml", """
        services:
          core:
            image: core
            build: {dockerfile: Containerfile}
            environment: [A=1]
    """)
    out = resolve_extends(read_yaml(main), file=main, load=read_yaml)["services"]["web"]
    assert out == {
        "image": "core",
        "build": {"dockerfile": "Containerfile", "context": str(tmp_path / "lib")},
        "environment": {"A": "1", "B": "2"},
        "hostname": "app",
        "user": "web",
    }


def test_extends_base_dir_option(tmp_path: Path) -> None:
    write(tmp_path / "project" / "common.yaml", "services: {app: {image: a}}\n")
    tree = y("services: {web: {extends: {file: common.yaml, service: app}}}", str(tmp_path / "sub" / "o.yaml"))
    out = resolve_extends(tree, file=str(tmp_path / "sub" / "o.yaml"), load=read_yaml,
                          base_dir=str(tmp_path / "project"))
    assert out["services"]["web"] == {"image": "a"}


@pytest.mark.parametrize(("services", "message", "service", "line"), [
    ("a: {extends: b}\n  b: {extends: a}\n", "circular extends: a -> b -> a", "a", 2),
    ("a: {extends: a}\n", "circular extends: a -> a", "a", 2),
    ("x: {extends: a}\n  a: {extends: {service: b}}\n  b: {extends: c}\n  c: {extends: a}\n",
     "circular extends: a -> b -> c -> a", "a", 3),
])
def test_extends_cycles(services: str, message: str, service: str, line: int) -> None:
    tree = y("services:\n  " + services, "compose.yaml")
    with pytest.raises(SpecError) as exc:
        resolve_extends(tree, file="compose.yaml", load=no_load)
    p = one_problem(exc)
    assert p.message == message
    assert p.path == ("services", service, "extends")
    assert p.location is not None and p.location.line == line and p.location.file == "compose.yaml"
    assert str(p).startswith(f"compose.yaml:{line}:")
    assert f"services.{service}.extends: {message}" in str(p)


def test_extends_cycle_across_files(tmp_path: Path) -> None:
    main = write(tmp_path / "compose.yaml", "services:\n  web: {extends: {file: b.yaml, service: base}}\n")
    write(tmp_path / "b.yaml", "services:\n  base: {extends: {file: compose.yaml, service: web}}\n")
    with pytest.raises(SpecError) as exc:
        resolve_extends(read_yaml(main), file=main, load=read_yaml)
    p = one_problem(exc)
    assert p.message == "circular extends: web -> base (b.yaml) -> web"
    assert p.location == Location(main, 2, 18)


@pytest.mark.parametrize(("services", "message", "path", "col"), [
    ("web: {extends: nope}", 'unknown service "nope" in extends', ("services", "web", "extends"), 18),
    ("web: {extends: {service: nope}}", 'unknown service "nope" in extends',
     ("services", "web", "extends", "service"), 28),
    ("web: {extends: {file: 3}}", 'extends must be a service name or a mapping with a "service" name',
     ("services", "web", "extends"), 18),
])
def test_extends_unknown_service(services: str, message: str, path: tuple, col: int) -> None:
    tree = y("services:\n  " + services + "\n", "compose.yaml")
    with pytest.raises(SpecError) as exc:
        resolve_extends(tree, file="compose.yaml", load=no_load)
    p = one_problem(exc)
    assert (p.message, p.path, p.location) == (message, path, Location("compose.yaml", 2, col))


def test_extends_unknown_service_or_file_elsewhere(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", "services: {other: {image: x}}\n")
    main = write(tmp_path / "compose.yaml", """
        services:
          web: {extends: {file: b.yaml, service: app}}
          api:
            extends:
              service: app
              file: missing.yaml
          ok: {image: fine}
    """)
    with pytest.raises(SpecError) as exc:
        resolve_extends(read_yaml(main), file=main, load=read_yaml)
    first, second = exc.value.problems
    assert first.message == 'unknown service "app" in extends file "b.yaml"'
    assert first.location == Location(main, 3, 42)
    assert second.message == 'cannot read extends file "missing.yaml": no such file'
    assert second.path == ("services", "api", "extends", "file")
    assert second.location == Location(main, 7, 13)


def test_extends_error_inside_other_file_keeps_its_location(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", "services:\n  app: [oops\n")
    main = write(tmp_path / "compose.yaml", "services: {web: {extends: {file: b.yaml, service: app}}}\n")
    with pytest.raises(SpecError) as exc:
        resolve_extends(read_yaml(main), file=main, load=read_yaml)
    assert exc.value.problems[0].location.file == str(tmp_path / "b.yaml")


def test_service_extending_a_broken_one_adds_no_noise() -> None:
    tree = y("services:\n  a: {extends: a}\n  b: {extends: a}\n  c: {image: c}\n")
    with pytest.raises(SpecError) as exc:
        resolve_extends(tree, file="compose.yaml", load=no_load)
    assert len(exc.value.problems) == 1


def test_no_services_or_no_extends_is_a_no_op() -> None:
    tree = y("networks: {n: {}}")
    assert resolve_extends(tree, file="c.yaml", load=no_load) is tree
    tree = y("services: {web: {image: a}, db:}")
    assert resolve_extends(tree, file="c.yaml", load=no_load) == tree


# --- rebase_paths ---------------------------------------------------------------------------------

def test_rebase_paths_whole_project() -> None:
    tree = y("""
        services:
          web:
            build:
              context: ./app
              additional_contexts: {base: ../base, img: docker-image://alpine, svc: 'service:x'}
            extends: {file: common.yaml, service: x}
          git: {build: 'https://github.com/a/b.git'}
        configs: {c: {file: ./c.conf}, e: {external: true}}
        secrets: {s: {file: s.txt}, env: {environment: X}}
        volumes:
          bind: {driver_opts: {type: none, o: bind, device: ./data}}
          other: {driver: local}
    """)
    out = rebase_paths(tree, "/p/q")
    assert out["services"]["web"]["build"] == {
        "context": "/p/q/app",
        "additional_contexts": {"base": "/p/base", "img": "docker-image://alpine", "svc": "service:x"}}
    assert out["services"]["web"]["extends"]["file"] == "/p/q/common.yaml"
    assert out["services"]["git"]["build"] == "https://github.com/a/b.git"
    assert out["configs"] == {"c": {"file": "/p/q/c.conf"}, "e": {"external": True}}
    assert out["secrets"]["s"] == {"file": "/p/q/s.txt"}
    assert out["volumes"]["bind"]["driver_opts"]["device"] == "/p/q/data"
    assert rebase_paths(out, "/elsewhere") == out  # idempotent
    assert locate(out, ("configs", "c", "file")) == locate(tree, ("configs", "c", "file"))


# --- include --------------------------------------------------------------------------------------

def project_loader(calls: list | None = None):
    """A load_project callback like load.py's: read, extends, nested include, merge."""
    def load_project(paths: list[str], project_dir: str | None, env_files: list[str] | None) -> Map:
        if calls is not None:
            calls.append((paths, project_dir, env_files))
        trees = []
        for path in paths:
            tree = resolve_extends(read_yaml(path), file=path, load=read_yaml)
            trees.append(resolve_include(tree, file=path, load_project=load_project))
        return merge_all(trees)
    return load_project


def test_include_short_syntax(tmp_path: Path) -> None:
    main = write(tmp_path / "compose.yaml", """
        include:
          - sub/compose.yaml
        services:
          web: {image: web, depends_on: [db]}
    """)
    sub = write(tmp_path / "sub" / "compose.yaml", """
        services:
          db:
            build: .
            volumes: ['./data:/var/lib/db', 'dbdata:/x']
        volumes:
          dbdata: {}
        networks:
          back: {}
    """)
    calls: list = []
    out = resolve_include(read_yaml(main), file=main, load_project=project_loader(calls))
    assert calls == [([sub], str(tmp_path / "sub"), None)]
    assert "include" not in out
    assert out["services"]["web"] == {"image": "web", "depends_on": ["db"]}
    assert out["services"]["db"] == {"build": str(tmp_path / "sub"),
                                     "volumes": [f"{tmp_path}/sub/data:/var/lib/db", "dbdata:/x"]}
    assert out["volumes"] == {"dbdata": {}} and out["networks"] == {"back": {}}
    assert locate_key(out, ("services", "db")) == Location(sub, 3, 3)
    assert locate_key(out, ("services", "web")) == Location(main, 5, 3)


def test_include_long_syntax(tmp_path: Path) -> None:
    main = write(tmp_path / "compose.yaml", """
        include:
          - path: [lib/a.yaml, lib/b.yaml]
            project_directory: proj
            env_file: [lib/x.env, /dev/null]
    """)
    write(tmp_path / "lib" / "a.yaml", "services:\n  db: {image: a, env_file: db.env, ports: ['1:1']}\n")
    write(tmp_path / "lib" / "b.yaml", "services:\n  db: {image: b, ports: !reset []}\n")
    calls: list = []
    out = resolve_include(read_yaml(main), file=main, load_project=project_loader(calls))
    lib = tmp_path / "lib"
    assert calls == [([str(lib / "a.yaml"), str(lib / "b.yaml")], str(tmp_path / "proj"), [str(lib / "x.env")])]
    assert out == {"services": {"db": {"image": "b", "env_file": str(tmp_path / "proj" / "db.env")}}}


def test_include_string_path_and_default_project_dir(tmp_path: Path) -> None:
    main = write(tmp_path / "compose.yaml", "include:\n  - path: lib/a.yaml\n    env_file: e.env\n")
    write(tmp_path / "lib" / "a.yaml", "services: {db: {image: a}}\n")
    calls: list = []
    resolve_include(read_yaml(main), file=main, load_project=project_loader(calls))
    assert calls == [([str(tmp_path / "lib" / "a.yaml")], str(tmp_path / "lib"), [str(tmp_path / "e.env")])]


def test_include_nested_and_extends_inside(tmp_path: Path) -> None:
    main = write(tmp_path / "compose.yaml", "include: [a/compose.yaml]\nservices: {web: {image: w}}\n")
    write(tmp_path / "a" / "compose.yaml", """
        include: [../b/compose.yaml]
        services:
          api: {extends: {file: ../common/base.yaml, service: base}}
    """)
    write(tmp_path / "b" / "compose.yaml", "services:\n  cache: {build: ./cache}\n")
    write(tmp_path / "common" / "base.yaml", "services:\n  base: {build: ./api}\n")
    out = resolve_include(read_yaml(main), file=main, load_project=project_loader())
    assert out["services"] == {
        "web": {"image": "w"},
        "api": {"build": str(tmp_path / "common" / "api")},
        "cache": {"build": str(tmp_path / "b" / "cache")},
    }


def test_include_conflict_with_local_definition(tmp_path: Path) -> None:
    main = write(tmp_path / "compose.yaml", """
        include: [sub/compose.yaml]
        services:
          db: {image: mine}
    """)
    sub = write(tmp_path / "sub" / "compose.yaml", "services:\n  db: {image: theirs}\n")
    with pytest.raises(SpecError) as exc:
        resolve_include(read_yaml(main), file=main, load_project=project_loader())
    p = one_problem(exc)
    assert p.path == ("services", "db")
    assert p.location == Location(main, 4, 3)
    assert p.message == f'service "db" is also defined in {sub}:2:3; an included service cannot be redefined'


def test_include_conflict_between_two_includes(tmp_path: Path) -> None:
    main = write(tmp_path / "compose.yaml", "include: [a.yaml, b.yaml]\n")
    a = write(tmp_path / "a.yaml", "networks:\n  shared: {driver: bridge}\n")
    b = write(tmp_path / "b.yaml", "networks:\n  shared: {driver: macvlan}\n")
    with pytest.raises(SpecError) as exc:
        resolve_include(read_yaml(main), file=main, load_project=project_loader())
    p = one_problem(exc)
    assert p.location == Location(a, 2, 3)
    assert f"also defined in {b}:2:3" in p.message and p.message.startswith('network "shared"')


def test_include_identical_definitions_are_accepted(tmp_path: Path) -> None:
    main = write(tmp_path / "compose.yaml", "include: [a.yaml]\nnetworks:\n  shared: {driver: bridge}\n")
    write(tmp_path / "a.yaml", "networks:\n  shared: {driver: bridge}\nservices: {x: {image: x}}\n")
    out = resolve_include(read_yaml(main), file=main, load_project=project_loader())
    assert out == {"networks": {"shared": {"driver": "bridge"}}, "services": {"x": {"image": "x"}}}
    assert locate_key(out, ("networks", "shared")) == Location(main, 3, 3)


@pytest.mark.parametrize("self_include", [False, True])
def test_include_cycle(tmp_path: Path, self_include: bool) -> None:
    if self_include:
        main = write(tmp_path / "compose.yaml", "include: [compose.yaml]\n")
        expected = "include cycle: compose.yaml -> compose.yaml"
    else:
        main = write(tmp_path / "compose.yaml", "include: [sub/compose.yaml]\n")
        write(tmp_path / "sub" / "compose.yaml", "include:\n  - ../compose.yaml\n")
        expected = "include cycle: compose.yaml -> sub/compose.yaml -> compose.yaml"
    with pytest.raises(SpecError) as exc:
        resolve_include(read_yaml(main), file=main, load_project=project_loader())
    p = one_problem(exc)
    assert p.message == expected
    assert p.path == ("include", 0)


def test_include_missing_file_is_located(tmp_path: Path) -> None:
    main = write(tmp_path / "compose.yaml", "services: {}\ninclude:\n  - nope.yaml\n")
    with pytest.raises(SpecError) as exc:
        resolve_include(read_yaml(main), file=main, load_project=project_loader())
    p = one_problem(exc)
    assert p.message == f'cannot include "{tmp_path / "nope.yaml"}": no such file'
    assert p.location == Location(main, 3, 5)


@pytest.mark.parametrize(("include", "message"), [
    ("include: {path: a.yaml}", "include must be a list of files or of {path, project_directory, env_file}"),
    ("include: [{project_directory: x}]", 'an include entry needs "path": a file or a list of files'),
    ("include: [[a.yaml]]", "an include entry must be a file or a mapping with a path"),
])
def test_include_bad_entries(include: str, message: str) -> None:
    def never(*_: Any) -> Map:
        raise AssertionError("not called")
    with pytest.raises(SpecError) as exc:
        resolve_include(y(include, "c.yaml"), file="/p/c.yaml", load_project=never)
    p = one_problem(exc)
    assert p.message == message
    assert p.location is not None and p.location.file == "c.yaml"


def test_no_include_is_a_no_op() -> None:
    tree = y("services: {web: {image: a}}")
    assert resolve_include(tree, file="/p/c.yaml", load_project=lambda *a: Map()) is tree
