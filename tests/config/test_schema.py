"""Schema validation of the merged raw tree: each bad input gives exactly the expected located messages."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from supervisor.config import schema
from supervisor.config.source import Map, parse_yaml
from supervisor.errors import format_path


def tree(text: str) -> Map:
    return parse_yaml(textwrap.dedent(text), "compose.yaml")


def found(text: str) -> list[str]:
    """`line:col path: message` for each problem, in the order validate() returns them."""
    out = []
    for p in schema.validate(tree(text)):
        assert p.location is not None and p.location.file == "compose.yaml", p
        out.append(f"{p.location.line}:{p.location.col} {format_path(p.path)}: {p.message}")
    return out


CASES = [
    pytest.param(
        """
        servces: {}
        """,
        ['2:1 servces: unknown key "servces" (did you mean "services"?)'],
        id="unknown-top-level-key",
    ),
    pytest.param(
        """
        services:
          web:
            imag: nginx
        """,
        ['4:5 services.web.imag: unknown key "imag" (did you mean "image"?)'],
        id="unknown-service-key-at-the-key",
    ),
    pytest.param(
        """
        services:
          web:
            image: nginx
            frobnicate: 1
        """,
        ['5:5 services.web.frobnicate: unknown key "frobnicate"'],
        id="unknown-key-without-suggestion",
    ),
    pytest.param(
        """
        services:
          web:
            image: nginx
            ports: "80:80"
        """,
        ['5:12 services.web.ports: must be a list, found "80:80"'],
        id="type-list",
    ),
    pytest.param(
        """
        services:
          web:
            image: 5
        """,
        ["4:12 services.web.image: must be a string, found 5"],
        id="type-string",
    ),
    pytest.param(
        """
        services:
          web:
            image: x
            environment: FOO=bar
        """,
        ['5:18 services.web.environment: must be a mapping or a list, found "FOO=bar"'],
        id="oneof-no-branch-takes-a-string",
    ),
    pytest.param(
        """
        services:
          web:
            image: x
            command: 5
        """,
        ["5:14 services.web.command: must be a list or a string, found 5"],
        id="oneof-null-left-out",
    ),
    pytest.param(
        """
        services: [web]
        """,
        ["2:11 services: must be a mapping, found a list"],
        id="type-mapping",
    ),
    pytest.param(
        """
        services:
          web:
        """,
        ["3:7 services.web: must be a mapping, found an empty value"],
        id="empty-service",
    ),
    pytest.param(
        """
        services:
          web:
            image: x
            cgroup: hots
        """,
        ['5:13 services.web.cgroup: must be one of: "host", "private", found "hots" (did you mean "host"?)'],
        id="enum",
    ),
    pytest.param(
        """
        services:
          web:
            image: x
            depends_on:
              db:
                condition: service_healty
          db: {image: y}
        """,
        [
            '7:20 services.web.depends_on.db.condition: must be one of: "service_started", "service_healthy", '
            '"service_completed_successfully", found "service_healty" (did you mean "service_healthy"?)'
        ],
        id="enum-inside-oneof-mapping-branch",
    ),
    pytest.param(
        """
        services:
          web:
            image: x
            depends_on:
              db: {}
          db: {image: y}
        """,
        ['6:11 services.web.depends_on.db: missing required key "condition"'],
        id="required",
    ),
    pytest.param(
        """
        services:
          web:
            image: x
            depends_on: [db, 5]
        """,
        ["5:22 services.web.depends_on[1]: must be a string, found 5"],
        id="oneof-list-branch-item-type",
    ),
    pytest.param(
        """
        services:
          web:
            image: x
            depends_on:
              db: {condition: service_started, required: no}
        """,
        [
            '6:50 services.web.depends_on.db.required: must be a boolean (true or false), found "no" '
            "(YAML 1.2 booleans are only true and false)"
        ],
        id="yaml-1.2-boolean-hint",
    ),
    pytest.param(
        """
        services:
          my web: {image: x}
        """,
        ['3:3 services.my web: invalid service name "my web": only letters, digits, ".", "_" and "-" are allowed'],
        id="invalid-service-name",
    ),
    pytest.param(
        """
        services:
          web: {image: x, container_name: "-"}
        """,
        [
            '3:35 services.web.container_name: invalid container name "-": expected at least 2 characters of '
            'letters, digits, "_", "." and "-", starting with a letter or digit'
        ],
        id="pattern-container-name",
    ),
    pytest.param(
        """
        services:
          web: {image: x, pull_policy: sometimes}
        """,
        [
            '3:32 services.web.pull_policy: invalid pull_policy "sometimes": expected "always", "never", "missing", '
            '"build", "if_not_present", "refresh", "daily", "weekly" or "every_<duration>" like "every_12h"'
        ],
        id="pattern-pull-policy",
    ),
    pytest.param(
        """
        services:
          web:
            image: x
            cap_add: [NET_ADMIN, SYS_TIME, NET_ADMIN]
        """,
        ['5:36 services.web.cap_add[2]: duplicate entry "NET_ADMIN"'],
        id="unique-items",
    ),
    pytest.param(
        """
        services:
          web: {image: x, cpu_percent: 200, oom_score_adj: -2000}
        """,
        [
            "3:32 services.web.cpu_percent: must be at most 100, found 200",
            "3:52 services.web.oom_score_adj: must be at least -1000, found -2000",
        ],
        id="minimum-maximum",
    ),
    pytest.param(
        """
        services:
          web:
            image: x
            build:
              contxt: .
        """,
        ['6:7 services.web.build.contxt: unknown key "contxt" (did you mean "context"?)'],
        id="unknown-key-in-oneof-object-branch",
    ),
    pytest.param(
        """
        services:
          web:
            image: x
            networks:
              front:
                aliasess: [www]
        networks: {front: {}}
        """,
        ['7:9 services.web.networks.front.aliasess: unknown key "aliasess" (did you mean "aliases"?)'],
        id="nested-oneof",
    ),
    pytest.param(
        """
        services:
          web:
            image: x
            volumes:
              - type: volum
                source: data
                target: /data
              - {source: ./x, target: /x}
        """,
        [
            '6:15 services.web.volumes[0].type: must be one of: "bind", "volume", "tmpfs", "cluster", "npipe", '
            '"image", found "volum" (did you mean "volume"?)',
            '9:9 services.web.volumes[1]: missing required key "type"',
        ],
        id="long-volume-syntax",
    ),
    pytest.param(
        """
        services:
          web:
            image: x
            ulimits:
              nofile: {soft: 1024}
              nproc: [1]
        """,
        [
            '6:15 services.web.ulimits.nofile: missing required key "hard"',
            "7:14 services.web.ulimits.nproc: must be a mapping, a string or an integer, found a list",
        ],
        id="ulimits",
    ),
    pytest.param(
        """
        services:
          web:
            image: x
            extends: {file: base.yaml}
        """,
        ['5:14 services.web.extends: missing required key "service"'],
        id="extends-needs-service",
    ),
    pytest.param(
        """
        services:
          web:
            image: x
            healthcheck: {test: [CMD, "true"], interval: 10}
            deploy:
              resources:
                limits: {memory: 512}
        """,
        [
            "5:50 services.web.healthcheck.interval: must be a string, found 10",
            "8:26 services.web.deploy.resources.limits.memory: must be a string, found 512",
        ],
        id="durations-and-sizes-are-strings",
    ),
    pytest.param(
        """
        services:
          b: {image: 1}
          a: {imag: x}
        volumes:
          data: {driver: 5}
        """,
        [
            "3:14 services.b.image: must be a string, found 1",
            '4:7 services.a.imag: unknown key "imag" (did you mean "image"?)',
            "6:18 volumes.data.driver: must be a string, found 5",
        ],
        id="several-sorted-by-location",
    ),
]


@pytest.mark.parametrize("text, expected", CASES)
def test_invalid_inputs_give_located_messages(text: str, expected: list[str]) -> None:
    assert found(text) == expected


def test_valid_file_has_no_problems() -> None:
    assert found(
        """
        name: demo
        x-common: &common {restart: always}
        services:
          web:
            <<: *common
            image: nginx:1.27
            command: ["nginx", "-g", "daemon off;"]
            ports: ["8080:80", {target: 443, published: "8443", protocol: tcp}]
            environment: {A: "1", B: 2, C: true, D: null}
            depends_on:
              db: {condition: service_healthy, restart: true}
            healthcheck: {test: ["CMD", "true"], interval: 5s, retries: 3}
            deploy: {replicas: 2, resources: {limits: {cpus: "0.5", memory: 128M}}}
            volumes: ["data:/data", {type: bind, source: ./conf, target: /etc/conf, read_only: true}]
            networks: {front: {aliases: [www]}}
            x-pysup: {anything: [goes, here]}
            x-other: 1
          db:
            image: postgres
            read_only: "yes"
        networks: {front: {}}
        volumes: {data: {}}
        x-pysup: {nonsense: true}
        """
    ) == []


def test_x_pysup_inside_is_not_validated_here() -> None:
    assert found(
        """
        services:
          web:
            image: x
            x-pysup: 5
        x-pysup: [1, 2]
        """
    ) == []


def test_no_message_dumps_a_schema() -> None:
    messages = found(
        """
        services:
          web:
            image: x
            environment: 5
            command: {a: 1}
            depends_on: 7
            networks: 3
            build: [1]
        """
    )
    assert len(messages) == 5
    for message in messages:
        assert "{" not in message and "'type'" not in message and "valid under" not in message


def test_one_problem_per_unknown_key() -> None:
    messages = found(
        """
        services:
          web: {image: x, foo: 1, bar: 2}
        """
    )
    assert messages == [
        '3:19 services.web.foo: unknown key "foo"',
        '3:27 services.web.bar: unknown key "bar"',
    ]


def test_flattened_schema_has_no_refs_left() -> None:
    flat = schema.flatten(schema.load_schema())
    assert "$ref" not in str(flat) and "$defs" not in flat


def big_compose(services: int) -> str:
    lines = ["services:"]
    for i in range(services):
        lines += [
            f"  s{i}:",
            "    image: nginx:latest",
            "    command: [sh, -c, 'echo hi']",
            "    environment: {A: '1', B: two}",
            f"    ports: ['{8000 + i}:80']",
            f"    depends_on: {{s{i - 1}: {{condition: service_started}}}}" if i else "    restart: always",
            "    volumes: ['data:/data', './x:/y:ro']",
            "    healthcheck: {test: [CMD, 'true'], interval: 5s}",
            "    deploy: {replicas: 2, resources: {limits: {cpus: '0.5', memory: 100M}}}",
            "    networks: [default]",
            "    labels: [a=b]",
        ]
    lines.append("volumes: {data: {}}")
    return "\n".join(lines)


def test_a_200_service_file_validates_clean() -> None:
    # Speed is measured in bench/load_config.py, not asserted here.
    big = parse_yaml(big_compose(200), "big.yaml")
    assert schema.validate(big) == []


@pytest.mark.parametrize("text, expected", CASES)
def test_the_fast_validator_agrees_that_invalid_inputs_are_invalid(text: str, expected: list[str]) -> None:
    # validate() trusts the fast check for "valid"; a file it passes would never get its messages.
    fast = schema._fast_validator(schema.COMPOSE_SCHEMA)
    assert fast(tree(text)) == (not expected)


def _nodes(value, path=()):
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _nodes(v, path + (i,))


_ODD_VALUES = [None, True, False, 0, 1, -1, 1.5, 2.0, "", "x", "1", "yes", "always", "on-failure", "host", "10s",
               [], ["a"], ["a", "a"], [1, 1.0], [True, 1], {}, {"a": 1}, {"x-a": 1}, {"image": "x"}]


@pytest.mark.parametrize("seed", range(3))
def test_the_fast_check_answers_as_jsonschema_does_on_mutated_files(seed: int) -> None:
    # The fast check must never pass what jsonschema rejects (its messages would be lost), and should
    # pass what jsonschema passes (or every load would take the slow path). Every node of real files
    # replaced by odd values, keys added and removed: the answers must be the same.
    import copy
    import glob
    import random

    rnd = random.Random(seed)
    fast = schema._fast_validator(schema.COMPOSE_SCHEMA)
    slow = schema.validator(schema.COMPOSE_SCHEMA)
    examples = Path(__file__).resolve().parents[2] / "examples" / "compose"
    files = sorted(glob.glob(f"{examples}/**/*.yaml", recursive=True)) + ["big"]
    checked = valid = 0
    for name in files:
        text = big_compose(3) if name == "big" else Path(name).read_text(encoding="utf-8")
        original = parse_yaml(text, name)
        paths = [p for p, _ in _nodes(original) if p]
        for _ in range(60):
            t = copy.deepcopy(original)
            path = rnd.choice(paths)
            parent = t
            for key in path[:-1]:
                parent = parent[key]
            roll = rnd.random()
            if roll < 0.6:
                parent[path[-1]] = copy.deepcopy(rnd.choice(_ODD_VALUES))
            elif roll < 0.8 and isinstance(parent, dict):
                parent[rnd.choice(["foo", "x-foo", "image", "1abc", "a b"])] = copy.deepcopy(rnd.choice(_ODD_VALUES))
            elif roll < 0.8:
                parent.append(copy.deepcopy(parent[0]))
            elif roll < 0.9 and isinstance(parent, dict):  # renamed: names have patterns
                parent[rnd.choice(["a b", "-", "é", "x-y", "web.1"])] = parent.pop(path[-1])
            elif isinstance(parent, dict):
                del parent[path[-1]]
            expected = slow.is_valid(t)
            assert fast(t) == expected, (name, path)
            checked, valid = checked + 1, valid + expected
    assert checked > 500 and 0.2 < valid / checked < 0.8  # both answers were exercised
