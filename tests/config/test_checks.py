"""Semantic checks, profiles, unsupported-key warnings and x-pysup validation on the raw tree."""

from __future__ import annotations

import textwrap

import pytest

from supervisor.config import checks
from supervisor.config.checks import (
    active_services,
    dependency_graph,
    semantic_problems,
    unsupported_key_warnings,
    xpysup_problems,
)
from supervisor.config.schema import load_schema, validate
from supervisor.config.source import Map, parse_yaml
from supervisor.errors import Problem, format_path


def tree(text: str) -> Map:
    return parse_yaml(textwrap.dedent(text), "compose.yaml")


def show(problems: list[Problem]) -> list[str]:
    out = []
    for p in problems:
        assert p.location is not None, p
        out.append(f"{p.location.line}:{p.location.col} {format_path(p.path)}: {p.message}")
    return out


def semantic(text: str, **kwargs) -> list[str]:
    t = tree(text)
    assert validate(t) == [], "test inputs must pass the schema"
    return show(semantic_problems(t, **kwargs))


# --- references ---------------------------------------------------------------------------------

def test_unknown_depends_on_list_and_map_syntax() -> None:
    assert semantic(
        """
        services:
          web:
            image: x
            depends_on: [dbb, cache]
          api:
            image: x
            depends_on:
              cash: {condition: service_started}
          db: {image: x}
          cache: {image: x}
        """
    ) == [
        '5:18 services.web.depends_on[0]: unknown service "dbb" in depends_on (did you mean "db"?)',
        '9:7 services.api.depends_on.cash: unknown service "cash" in depends_on (did you mean "cache"?)',
    ]


def test_depending_on_itself() -> None:
    assert semantic(
        """
        services:
          web:
            image: x
            depends_on:
              web: {condition: service_started}
        """
    ) == ['6:7 services.web.depends_on.web: service "web" depends on itself']


def test_cycle_is_reported_once_at_the_first_services_depends_on() -> None:
    assert semantic(
        """
        services:
          c: {image: x, depends_on: [a]}
          b: {image: x, depends_on: [c]}
          a: {image: x, depends_on: [b]}
          d: {image: x, depends_on: [a]}
        """
    ) == ["5:30 services.a.depends_on[0]: dependency cycle: a -> b -> c -> a"]


def test_cycle_through_implicit_dependencies() -> None:
    assert semantic(
        """
        services:
          app:
            image: x
            depends_on:
              proxy: {condition: service_started}
          proxy:
            image: x
            network_mode: "service:app"
        """
    ) == ["6:7 services.app.depends_on.proxy: dependency cycle: app -> proxy -> app"]


def test_two_separate_cycles_give_two_problems() -> None:
    assert semantic(
        """
        services:
          a: {image: x, depends_on: [b]}
          b: {image: x, depends_on: [a]}
          x: {image: x, links: [y]}
          y: {image: x, links: ["x:alias"]}
        """
    ) == [
        "3:30 services.a.depends_on[0]: dependency cycle: a -> b -> a",
        "5:25 services.x.links[0]: dependency cycle: x -> y -> x",
    ]


def test_other_service_references() -> None:
    assert semantic(
        """
        services:
          web:
            image: x
            links: ["db:database", ghost]
            volumes_from: ["db:ro", "container:legacy", "spook:rw"]
            network_mode: "service:nope"
            pid: "service:db"
            ipc: "service:phantom"
          db: {image: x}
        """
    ) == [
        '5:28 services.web.links[1]: unknown service "ghost" in links',
        '6:49 services.web.volumes_from[2]: unknown service "spook" in volumes_from',
        '7:19 services.web.network_mode: unknown service "nope" in network_mode',
        '9:10 services.web.ipc: unknown service "phantom" in ipc',
    ]


def test_networks_must_be_defined_except_default() -> None:
    assert semantic(
        """
        services:
          web:
            image: x
            networks: [default, front, backend]
          api:
            image: x
            networks:
              fornt: {aliases: [api]}
        networks:
          front: {}
        """
    ) == [
        '5:32 services.web.networks[2]: network "backend" is not defined in the top-level networks',
        '9:7 services.api.networks.fornt: network "fornt" is not defined in the top-level networks '
        '(did you mean "front"?)',
    ]


def test_network_mode_with_networks() -> None:
    assert semantic(
        """
        services:
          web:
            image: x
            network_mode: host
            networks: [default]
          ok:
            image: x
            network_mode: none
            networks: []
        """
    ) == ['6:5 services.web.networks: "networks" cannot be used together with "network_mode"']


def test_named_volumes_must_be_defined_but_paths_are_bind_mounts() -> None:
    assert semantic(
        """
        services:
          web:
            image: x
            volumes:
              - data:/data
              - dta:/other:ro
              - /host:/abs
              - ./rel:/rel
              - ~/home:/home
              - ../up:/up
              - /anonymous
              - type: volume
                source: cache
                target: /cache
              - type: volume
                target: /anon
              - type: bind
                source: not-a-volume
                target: /b
        volumes:
          data: {}
        """
    ) == [
        '7:9 services.web.volumes[1]: volume "dta" is not defined in the top-level volumes (did you mean "data"?)',
        '14:17 services.web.volumes[7].source: volume "cache" is not defined in the top-level volumes',
    ]


def test_secrets_and_configs_must_be_defined() -> None:
    assert semantic(
        """
        services:
          web:
            image: x
            secrets: [token, {source: key, target: /k}]
            configs: [{source: conf}, nginx]
        secrets:
          token: {file: ./token}
        configs:
          nginx: {content: "server {}"}
        """
    ) == [
        '5:31 services.web.secrets[1].source: secret "key" is not defined in the top-level secrets',
        '6:24 services.web.configs[0].source: config "conf" is not defined in the top-level configs',
    ]


# --- top-level definitions ----------------------------------------------------------------------

def test_secret_and_config_sources() -> None:
    assert semantic(
        """
        services: {}
        secrets:
          ok_file: {file: ./a}
          ok_env: {environment: TOKEN}
          ok_external: {external: true}
          ok_driver: {driver: vault}
          empty: {name: x}
          both: {file: ./a, environment: TOKEN}
        configs:
          ok_content: {content: hi}
          none: {labels: [a=b]}
          three: {file: ./a, environment: X, content: y}
        """
    ) == [
        '8:3 secrets.empty: secret "empty" needs "file" or "environment" (or "external: true")',
        '9:21 secrets.both.environment: "file" and "environment" cannot be used together in a secret',
        '12:3 configs.none: config "none" needs "file", "environment" or "content" (or "external: true")',
        '13:22 configs.three.environment: "file" and "environment" and "content" cannot be used together in a config',
    ]


def test_external_volume_takes_only_a_name_but_networks_are_not_checked() -> None:
    # compose-go validation/checkExternal applies to volumes only
    assert semantic(
        """
        services: {}
        volumes:
          ext: {external: true, name: real, driver: local, x-note: fine}
          notext: {external: false, driver: local}
        networks:
          extnet: {external: true, driver: bridge}
        """
    ) == [
        '4:37 volumes.ext.driver: "driver" cannot be used with "external: true": an external volume already '
        "exists and only its name may be given"
    ]


def test_consistency_rules() -> None:
    # limits that must agree and container_name with replicas are parse's (tests/config/test_parse.py)
    assert semantic(
        """
        services:
          web:
            image: x
            scale: 2
            container_name: web
            deploy: {replicas: 3}
          mem:
            image: x
            mem_limit: 1g
            pids_limit: 10
            deploy: {resources: {limits: {memory: 1024m, pids: 20}}}
          hc:
            image: x
            healthcheck: {test: [curl, -f, localhost]}
        """
    ) == [
        '15:26 services.hc.healthcheck.test[0]: healthcheck test must start with "CMD", "CMD-SHELL" or "NONE", '
        'found "curl"',
    ]


def test_valid_stack_has_no_semantic_problems() -> None:
    assert semantic(
        """
        services:
          web:
            image: x
            depends_on:
              db: {condition: service_healthy}
            links: [db]
            networks: {front: {}, default: {}}
            volumes: ["data:/data", "./src:/src"]
            secrets: [token]
            configs: [conf]
          db:
            image: y
            volumes_from: ["container:old"]
            healthcheck: {test: [CMD-SHELL, "pg_isready"]}
        networks: {front: {}}
        volumes: {data: {}}
        secrets: {token: {file: ./t}}
        configs: {conf: {file: ./c}}
        """
    ) == []


def test_wrong_types_are_left_to_the_schema() -> None:
    for text in ("services: [a]", "services: {web: 5}", "services: {web: {depends_on: 5, volumes: 7}}",
                 "volumes: [x]\nservices: {}", "secrets: {a: 5}\nservices: {}"):
        t = tree(text)
        semantic_problems(t)
        unsupported_key_warnings(t)
        xpysup_problems(t)


# --- profiles -----------------------------------------------------------------------------------

PROFILED = """
services:
  web: {image: x}
  debug: {image: x, profiles: [debug], depends_on: [ghost]}
  admin: {image: x, profiles: [admin, ops]}
  tool:
    image: x
    profiles: [tools]
    depends_on:
      admin: {condition: service_started, required: false}
"""


@pytest.mark.parametrize(
    "profiles, expected",
    [
        ((), {"web"}),
        (["debug"], {"web", "debug"}),
        (["ops"], {"web", "admin"}),
        (["*"], {"web", "debug", "admin", "tool"}),
        (["nope"], {"web"}),
    ],
)
def test_active_services(profiles, expected) -> None:
    assert active_services(tree(PROFILED), profiles) == expected


def test_references_are_checked_among_active_services_only() -> None:
    assert semantic(PROFILED) == []
    assert semantic(PROFILED, profiles=["debug"]) == [
        '4:53 services.debug.depends_on[0]: unknown service "ghost" in depends_on'
    ]
    # required: false on a disabled service is dropped, as compose does
    assert semantic(PROFILED, profiles=["tools"]) == []


def test_depending_on_a_disabled_service_is_an_error() -> None:
    text = """
    services:
      web: {image: x, depends_on: [db, admin]}
      db: {image: x, profiles: [data]}
      admin: {image: x, profiles: [a, b]}
    """
    assert semantic(text) == [
        '3:32 services.web.depends_on[0]: service "db" in depends_on is not enabled: it needs profile "data"',
        '3:36 services.web.depends_on[1]: service "admin" in depends_on is not enabled: it needs one of the '
        'profiles "a", "b"',
    ]
    assert semantic(text, profiles=["data", "b"]) == []


def test_dependency_graph_has_implicit_edges_of_active_services() -> None:
    t = tree(
        """
        services:
          web:
            image: x
            depends_on: [db]
            links: ["cache:c"]
            volumes_from: [files, "container:x"]
          db: {image: x, ipc: "service:shm"}
          cache: {image: x}
          files: {image: x}
          shm: {image: x}
          extra: {image: x, profiles: [p], depends_on: [web]}
        """
    )
    assert dependency_graph(t) == {
        "web": {"db", "cache", "files"}, "db": {"shm"}, "cache": set(), "files": set(), "shm": set(),
    }
    assert dependency_graph(t, ["p"])["extra"] == {"web"}


# --- unsupported keys ---------------------------------------------------------------------------

def warnings(text: str) -> list[str]:
    return show(unsupported_key_warnings(tree(text)))


def test_build_warning_text() -> None:
    problems = unsupported_key_warnings(tree("services:\n  web:\n    image: x\n    build: .\n"))
    assert [str(p) for p in problems] == [
        'compose.yaml:4:5: services.web.build: "build" is not supported by pysup and is ignored (use a prebuilt image)'
    ]


def test_every_unsupported_service_key_warns_once() -> None:
    unsupported = sorted(checks.unsupported_service_keys())
    assert {"build", "platform", "develop", "models", "provider", "pre_start", "gpus", "runtime", "isolation",
            "cgroup_parent"} <= set(unsupported)
    body = "".join(f"    {key}: null\n" for key in unsupported)
    found = unsupported_key_warnings(tree("services:\n  web:\n" + body))
    assert sorted(p.path[-1] for p in found) == unsupported
    assert all(p.message.startswith(f'"{p.path[-1]}" is not supported by pysup') for p in found)


def test_supported_keys_are_real_compose_keys_and_do_not_warn() -> None:
    service_keys = set(load_schema()["$defs"]["service"]["properties"])
    assert checks.SUPPORTED_SERVICE_KEYS <= service_keys
    assert checks.SUPPORTED_TOP_LEVEL_KEYS <= set(load_schema()["properties"])
    body = "".join(f"    {key}: null\n" for key in sorted(checks.SUPPORTED_SERVICE_KEYS))
    assert unsupported_key_warnings(tree("services:\n  web:\n" + body + "    x-pysup: {}\n    x-mine: 1\n")) == []


def test_top_level_warnings() -> None:
    assert warnings(
        """
        version: "3.9"
        name: demo
        services: {}
        models: {llm: {model: ai/x}}
        x-anything: 1
        """
    ) == [
        '2:1 version: "version" is obsolete and ignored (remove it)',
        '5:1 models: "models" is not supported by pysup and is ignored',
    ]


def test_nested_warnings() -> None:
    assert warnings(
        """
        services:
          web:
            image: x
            deploy:
              mode: global
              endpoint_mode: dnsrr
              placement: {constraints: [node.role==manager]}
              replicas: 2
              resources:
                limits: {cpus: "1", memory: 1g, pids: 100}
                reservations: {memory: 1g, generic_resources: []}
            ports:
              - {target: 80, published: 8080, app_protocol: http, x-note: 1}
            networks:
              front: {aliases: [w], driver_opts: {a: b}, link_local_ips: []}
            volumes:
              - {type: bind, source: ., target: /src, bind: {selinux: z, propagation: rprivate}}
              - {type: image, source: alpine, target: /img}
        networks:
          front:
            driver: overlay
            attachable: true
            ipam: {driver: custom, config: [{subnet: 10.1.0.0/16, aux_addresses: {a: 10.1.0.5}}]}
          back: {driver: bridge, driver_opts: {mtu: 1400}}
        volumes:
          data: {driver: nfs, driver_opts: {type: nfs}}
          plain: {driver: local, labels: [a=b]}
        secrets:
          token: {environment: TOKEN, template_driver: golang}
        configs:
          conf: {content: x, template_driver: golang}
        """
    ) == [
        '6:13 services.web.deploy.mode: mode "global" is not supported by pysup and is ignored '
        '(services run as "replicated")',
        '7:7 services.web.deploy.endpoint_mode: "endpoint_mode" is not supported by pysup and is ignored',
        '8:7 services.web.deploy.placement: "placement" is not supported by pysup and is ignored',
        '12:36 services.web.deploy.resources.reservations.generic_resources: "generic_resources" is not supported '
        "by pysup and is ignored",
        '16:29 services.web.networks.front.driver_opts: "driver_opts" is not supported by pysup and is ignored',
        '16:50 services.web.networks.front.link_local_ips: "link_local_ips" is not supported by pysup and is ignored',
        '18:54 services.web.volumes[0].bind.selinux: "selinux" is not supported by pysup and is ignored',
        '19:16 services.web.volumes[1].type: type "image" is not supported by pysup and is ignored '
        "(pysup mounts bind, volume and tmpfs)",
        '22:13 networks.front.driver: driver "overlay" is not supported by pysup and is ignored '
        "(pysup creates bridge networks)",
        '23:5 networks.front.attachable: "attachable" is not supported by pysup and is ignored',
        '24:20 networks.front.ipam.driver: driver "custom" is not supported by pysup and is ignored '
        "(pysup assigns addresses itself)",
        '24:59 networks.front.ipam.config[0].aux_addresses: "aux_addresses" is not supported by pysup and is ignored',
        '25:26 networks.back.driver_opts: "driver_opts" is not supported by pysup and is ignored',
        '27:18 volumes.data.driver: driver "nfs" is not supported by pysup and is ignored '
        "(volumes are local directories)",
        '27:23 volumes.data.driver_opts: "driver_opts" is not supported by pysup and is ignored',
        '30:31 secrets.token.template_driver: "template_driver" is not supported by pysup and is ignored',
        '32:22 configs.conf.template_driver: "template_driver" is not supported by pysup and is ignored',
    ]


# --- x-pysup ------------------------------------------------------------------------------------

def xpysup(text: str) -> list[str]:
    return show(xpysup_problems(tree(text)))


def test_valid_x_pysup() -> None:
    assert xpysup(
        """
        services:
          web:
            image: x
            x-pysup:
              rootfs: /srv/rootfs
              userns: auto
              restart_on_unhealthy: false
              backoff: {base: 100ms, cap: 5m, reset_after: 600}
              load_balance: least-connections
          db: {image: y, x-pysup: {userns: true}}
          plain: {image: z}
        x-pysup:
          backoff: {base: 0.5, cap: 1m30s}
          registries:
            docker.io: {mirrors: ["https://mirror.local"], insecure: false}
            "registry.local:5000": {insecure: true}
          subnet_pool: 10.89.0.0/16
          log_format: json
        """
    ) == []
    assert xpysup("services: {web: {image: x}}\nx-pysup:\n") == []


def test_x_pysup_problems() -> None:
    assert xpysup(
        """
        services:
          web:
            image: x
            x-pysup:
              rootf: /srv
              userns: maybe
              restart_on_unhealthy: yes
              backoff: {base: fast, cap: -1, reset: 10s}
              load_balance: random
        x-pysup:
          registries:
            "http://docker.io": {}
            quay.io: {mirrors: mirror.local, insecure: 1}
          subnet_pool: 10.0.0.0
          log_format: text
          colour: true
        """
    ) == [
        '6:7 services.web.x-pysup.rootf: unknown key "rootf" (did you mean "rootfs"?)',
        '7:15 services.web.x-pysup.userns: must be one of: true, false, "auto", "true", "false", found "maybe"',
        '8:29 services.web.x-pysup.restart_on_unhealthy: must be one of: true, false, "true", "false", found "yes"',
        '9:23 services.web.x-pysup.backoff.base: invalid duration "fast"',
        "9:34 services.web.x-pysup.backoff.cap: must be at least 0, found -1",
        '9:38 services.web.x-pysup.backoff.reset: unknown key "reset" (did you mean "reset_after"?)',
        '10:21 services.web.x-pysup.load_balance: must be one of: "round-robin", "least-connections", found "random"',
        '13:5 x-pysup.registries.http://docker.io: invalid registry host "http://docker.io": expected a host name '
        'with an optional port, like "docker.io" or "registry.local:5000"',
        '14:24 x-pysup.registries.quay.io.mirrors: must be a list, found "mirror.local"',
        '14:48 x-pysup.registries.quay.io.insecure: must be one of: true, false, "true", "false", found 1',
        '15:16 x-pysup.subnet_pool: invalid subnet "10.0.0.0": expected an address range in CIDR notation, '
        'like "10.89.0.0/16"',
        '16:15 x-pysup.log_format: must be one of: "console", "json", found "text"',
        '17:3 x-pysup.colour: unknown key "colour"',
    ]


def test_x_pysup_checks_beyond_the_schema() -> None:
    assert xpysup(
        """
        services:
          web: {image: x, x-pysup: {backoff: {base: 2m, cap: 30s}}}
        x-pysup:
          subnet_pool: 10.89.1.0/16
          backoff: {base: 1s, cap: 1s}
        """
    ) == [
        '3:45 services.web.x-pysup.backoff.base: backoff base ("2m") is longer than its cap ("30s")',
        '5:16 x-pysup.subnet_pool: invalid subnet_pool "10.89.1.0/16" (did you mean "10.89.0.0/16"?)',
    ]


def test_x_pysup_on_a_long_syntax_volume() -> None:
    assert xpysup(
        """
        services:
          web:
            image: x
            volumes:
              - ./short:/short:idmap
              - {type: bind, source: /a, target: /a, x-pysup: {idmap: true}}
              - {type: bind, source: /b, target: /b, x-pysup: {idmap: "false"}, bind: {x-other: 1}}
              - {type: volume, source: v, target: /v, x-pysup: {idmap: true}, x-mine: 1}
              - {type: bind, source: /c, target: /c, x-pysup: {idmap: yes}}
              - {type: bind, source: /d, target: /d, x-pysup: {id_map: true}}
              - {type: bind, source: /e, target: /e, x-pysup: [idmap]}
        """
    ) == [
        '10:63 services.web.volumes[4].x-pysup.idmap: must be one of: true, false, "true", "false", found "yes"',
        '11:56 services.web.volumes[5].x-pysup.id_map: unknown key "id_map" (did you mean "idmap"?)',
        "12:55 services.web.volumes[6].x-pysup: must be a mapping, found a list",
    ]


def test_x_pysup_of_wrong_type() -> None:
    assert xpysup("services: {web: {image: x, x-pysup: [1]}}\nx-pysup: 5\n") == [
        "1:37 services.web.x-pysup: must be a mapping, found a list",
        "2:10 x-pysup: must be a mapping, found 5",
    ]


def test_something_to_run_and_unique_container_names() -> None:
    assert semantic(
        """
        services:
          a: {image: x, container_name: same}
          b: {image: y, container_name: same}
          c: {build: .}
          d: {x-pysup: {rootfs: ./root}}
          e: {environment: {A: 1}}
        """
    ) == [
        '4:33 services.b.container_name: container name "same" is already used by service "a"',
        '5:3 services.c: service "c" has neither an image nor x-pysup.rootfs (pysup does not build images: '
        "build it elsewhere and name it here)",
        '7:3 services.e: service "e" has neither an image nor x-pysup.rootfs',
    ]
