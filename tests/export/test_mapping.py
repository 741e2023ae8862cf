"""The mapping of each compose key to Kubernetes, key by key (specs/kubernetes-export.md)."""

from __future__ import annotations

import base64

import pytest

from supervisor.export import kubernetes

from .k8s import consistency_errors, schema_errors


@pytest.fixture(autouse=True)
def _valid(export, monkeypatch):
    """Whatever a test exports must also be valid for the version it targets."""
    real = kubernetes.export

    def checked(stack, options=kubernetes.Options()):
        out = real(stack, options)
        assert schema_errors(out.manifests, options.kube_version) == []
        assert consistency_errors(out.manifests) == []
        return out

    monkeypatch.setattr(kubernetes, "export", checked)


def test_service_becomes_a_deployment_with_its_container_settings(export):
    r = export("""
        name: shop
        services:
          web:
            image: nginx:1.27
            entrypoint: ["/docker-entrypoint.sh"]
            command: ["sh", "-c", "echo $$HOME $$(hostname)"]
            environment: {A: "1", B: "x$$(y)"}
            working_dir: /srv
            user: "1000:2000"
            cap_add: [NET_ADMIN]
            cap_drop: [ALL]
            read_only: true
            labels: {com.example.team: web, note: "has spaces"}
            stop_grace_period: 1m30s
            restart: always
            deploy: {replicas: 3}
    """)
    d = r.get("Deployment", "web")
    assert d["spec"]["replicas"] == 3
    assert d["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/part-of": "shop",
                                                    "app.kubernetes.io/name": "web"}
    assert d["metadata"]["annotations"] == {"note": "has spaces"}
    assert d["spec"]["template"]["metadata"]["labels"]["com.example.team"] == "web"
    c = r.container("web")
    assert c["image"] == "nginx:1.27"
    assert c["command"] == ["/docker-entrypoint.sh"]
    # Kubernetes expands $(VAR) and $$: every `$` is doubled so the text arrives unchanged.
    assert c["args"] == ["sh", "-c", "echo $$HOME $$(hostname)"]
    assert c["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "x$$(y)"}]
    assert c["workingDir"] == "/srv"
    assert c["securityContext"] == {"runAsUser": 1000, "runAsGroup": 2000,
                                    "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
                                    "readOnlyRootFilesystem": True}
    assert r.pod("web")["terminationGracePeriodSeconds"] == 90
    assert r.pod("web")["restartPolicy"] == "Always"
    assert r.warned("services.web.labels.note") == ["not a valid Kubernetes label: kept as an annotation"]


def test_privileged_user_names_and_no_new_privileges(export):
    r = export("""
        services:
          a: {image: x, restart: always, privileged: true, security_opt: ["no-new-privileges:true"], user: www}
          b: {image: x, restart: always, security_opt: ["no-new-privileges", "seccomp=unconfined", "label=disable"]}
    """)
    assert r.container("a")["securityContext"] == {"privileged": True}
    assert "dropped" in r.warned("services.a.security_opt[0]")[0]
    assert "numeric ids" in r.warned("services.a.user")[0]
    assert r.container("b")["securityContext"] == {"allowPrivilegeEscalation": False,
                                                  "seccompProfile": {"type": "Unconfined"}}
    assert r.warned("services.b.security_opt[2]") == ['"label=disable": no Kubernetes equivalent: ignored']


@pytest.mark.parametrize("version, expected", [("1.32", None), ("1.33", "SIGINT")])
def test_stop_signal_where_the_version_has_it(export, version, expected):
    r = export("services: {db: {image: postgres, restart: always, stop_signal: SIGINT}}", kube_version=version)
    lifecycle = r.container("db").get("lifecycle", {})
    assert lifecycle.get("stopSignal") == expected
    if expected:
        assert r.pod("db")["os"] == {"name": "linux"}
        assert "feature gate" in r.warned("services.db.stop_signal")[0]
    else:
        assert "os" not in r.pod("db")
        assert "before 1.33" in r.warned("services.db.stop_signal")[0]


@pytest.mark.parametrize("version", ["1.32", "1.33"])
def test_an_explicit_sigterm_is_exported_since_the_image_may_stop_with_another(export, version):
    """Without `stopSignal` the runtime sends the image's STOPSIGNAL: `stop_signal: SIGTERM` is
    kept (or warned about) like any other; no `stop_signal` leaves the image's, as pysup does."""
    r = export("""
        services:
          db: {image: postgres, restart: always, stop_signal: SIGTERM}
          rt: {image: systemd, restart: always, stop_signal: SIGRTMIN+3}
          plain: {image: x, restart: always}
    """, kube_version=version)
    assert "stopSignal" not in r.container("plain").get("lifecycle", {}) and "os" not in r.pod("plain")
    assert r.warned("services.plain.stop_signal") == []
    if version == "1.33":
        assert r.container("db")["lifecycle"]["stopSignal"] == "SIGTERM"
        assert r.container("rt")["lifecycle"]["stopSignal"] == "SIGRTMIN+3"  # Kubernetes' spelling, not "37"
        assert r.pod("db")["os"] == {"name": "linux"}
        assert "feature gate" in r.warned("services.db.stop_signal")[0]
    else:
        assert "lifecycle" not in r.container("db") and "os" not in r.pod("db")
        assert r.warned("services.db.stop_signal") == [
            "SIGTERM: Kubernetes before 1.33 always sends the image's stop signal "
            "(SIGTERM unless the image sets another STOPSIGNAL)"]
        assert r.warned("services.rt.stop_signal")[0].startswith("SIGRTMIN+3: ")


def test_resources_limits_and_requests(export):
    r = export("""
        services:
          a: {image: x, restart: always, mem_limit: 64m, cpus: 0.5, pids_limit: 32, mem_reservation: 16m,
              cpu_shares: 512, cpuset: "0", memswap_limit: 128m}
          b:
            image: x
            restart: always
            deploy: {resources: {limits: {cpus: "2", memory: 1G}, reservations: {memory: 1500M}}}
    """)
    assert r.container("a")["resources"] == {"limits": {"cpu": "500m", "memory": "64Mi"},
                                             "requests": {"cpu": "500m", "memory": "16Mi"}}
    for key in ("pids_limit", "cpuset", "memswap_limit"):
        assert r.warned(f"services.a.{key}"), key
    assert r.container("b")["resources"] == {"limits": {"cpu": "2", "memory": "1Gi"},
                                             "requests": {"memory": "1Gi"}}
    assert "capped" in r.warned("services.b.mem_reservation")[0]


def test_healthcheck_becomes_probes(export):
    r = export("""
        services:
          a:
            image: x
            restart: always
            healthcheck: {test: ["CMD", "pg_isready"], interval: 10s, timeout: 2s, retries: 4,
                          start_period: 30s, start_interval: 2s}
          b:
            image: x
            restart: always
            healthcheck: {test: "curl -f localhost || exit 1", interval: 500ms}
            x-pysup: {restart_on_unhealthy: false}
          c:
            image: x
            restart: always
            healthcheck: {test: ["NONE"]}
          d:
            image: x
            restart: always
            healthcheck: {retries: 2}  # the image's test: Kubernetes does not run it
    """)
    a = r.container("a")
    probe = {"exec": {"command": ["pg_isready"]}, "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 4}
    assert a["livenessProbe"] == probe and a["readinessProbe"] == probe
    assert a["startupProbe"] == {"exec": {"command": ["pg_isready"]}, "periodSeconds": 2, "timeoutSeconds": 2,
                                 "failureThreshold": 15 + 4}
    b = r.container("b")
    assert "livenessProbe" not in b  # pysup would only report it unhealthy
    assert b["readinessProbe"]["exec"]["command"] == ["/bin/sh", "-c", "curl -f localhost || exit 1"]
    assert b["readinessProbe"]["periodSeconds"] == 1
    assert r.warned("services.b.healthcheck.interval") == [
        "0.5s rounded to 1s (Kubernetes counts whole seconds, at least 1)"]
    assert not {"livenessProbe", "readinessProbe", "startupProbe"} & set(r.container("c"))
    assert r.warned("services.c.healthcheck") == []
    assert not {"livenessProbe", "readinessProbe", "startupProbe"} & set(r.container("d"))
    assert r.warned("services.d.healthcheck") == [
        "no test: the image's health check, which Kubernetes does not run: no probes"]


def test_restart_policies(export):
    r = export("""
        services:
          always: {image: x, restart: always}
          stopped: {image: x, restart: unless-stopped}
          once: {image: x, restart: "no", deploy: {replicas: 2}}
          retry: {image: x, restart: "on-failure:3"}
          forever: {image: x, restart: on-failure}
    """)
    assert sorted(r.kinds("Deployment")) == ["always", "stopped"]
    once = r.get("Job", "once")["spec"]
    assert (once["backoffLimit"], once["completions"], once["parallelism"]) == (0, 2, 2)
    assert once["template"]["spec"]["restartPolicy"] == "Never"
    assert r.get("Job", "retry")["spec"]["backoffLimit"] == 3
    assert r.pod("retry", "Job")["restartPolicy"] == "OnFailure"
    assert r.get("Job", "forever")["spec"]["backoffLimit"] == 2**31 - 1
    assert "exported as a Job" in r.warned("services.retry.restart")[0]


def test_dependencies_become_init_containers(export):
    r = export("""
        services:
          migrate:
            image: migrator
            command: ["migrate", "up"]
            restart: "no"
            volumes: [data:/data]
          db:
            image: postgres
            restart: always
            healthcheck: {test: ["CMD", "pg_isready"]}
          cache:
            image: redis
            restart: always
            expose: ["6379"]
            healthcheck: {test: ["CMD", "redis-cli", "ping"]}
          app:
            image: app
            restart: always
            depends_on:
              db: {condition: service_healthy}
              cache: {condition: service_healthy}
              migrate: {condition: service_completed_successfully}
              other: {condition: service_started}
          other: {image: x, restart: always}
        volumes: {data: {}}
    """)
    init = r.pod("app")["initContainers"]
    assert [c["name"] for c in init] == ["wait-cache", "wait-db", "run-migrate"]  # depends_on order
    assert "nc -z -w 2 cache 6379" in init[0]["command"][2]
    assert "nslookup db" in init[1]["command"][2]  # db has no ports: a headless Service
    assert init[2]["image"] == "migrator" and init[2]["args"] == ["migrate", "up"]
    assert init[2]["volumeMounts"] == [{"name": "vol-data", "mountPath": "/data"}]
    assert ("Job", "migrate") not in r.by and ("Service", "migrate") not in r.by
    assert "init container" in r.warned("services.migrate")[0]
    assert "not enforced" in r.warned("services.app.depends_on.other")[0]
    assert r.get("Service", "db")["spec"]["clusterIP"] == "None"


def test_ports_expose_aliases_and_links(export):
    r = export("""
        services:
          web:
            image: x
            restart: always
            ports: ["8080:80", {target: 443, published: "8443", name: https, app_protocol: https},
                    "53:53/udp", "9000-9001:7000"]
            expose: ["9100", "9200-9201/udp"]
            networks: {default: {aliases: [www, web.internal]}}
          client: {image: x, restart: always, links: ["web:frontend"]}
    """, publish="NodePort")
    svc = r.get("Service", "web")["spec"]
    assert "type" not in svc  # ClusterIP
    assert [(p["name"], p["port"], p["protocol"]) for p in svc["ports"]] == [
        ("udp-53", 53, "UDP"), ("tcp-80", 80, "TCP"), ("https", 443, "TCP"), ("tcp-7000", 7000, "TCP"),
        ("tcp-9100", 9100, "TCP"), ("udp-9200", 9200, "UDP"), ("udp-9201", 9201, "UDP")]
    assert svc["ports"][2]["appProtocol"] == "https"
    pub = r.get("Service", "web-published")["spec"]
    assert pub["type"] == "NodePort"
    assert [(p["port"], p["targetPort"], p.get("nodePort")) for p in pub["ports"]] == [
        (8080, 80, None), (8443, 443, None), (53, 53, None), (9000, 7000, None)]
    assert any("9000-9001" in w for w in r.warned("services.web.ports[3]"))
    for alias in ("www", "web-internal", "frontend"):
        assert r.get("Service", alias)["spec"] == svc
    assert r.warned("services.web.networks.default.aliases") == [
        'alias "web.internal" exported as the Service "web-internal"']


def test_published_ports_default_to_a_load_balancer(export):
    r = export('services: {web: {image: x, restart: always, ports: ["30080:80"]}}')
    assert r.get("Service", "web-published")["spec"]["type"] == "LoadBalancer"
    r = export('services: {web: {image: x, restart: always, ports: ["30080:80"]}}', publish="NodePort")
    assert r.get("Service", "web-published")["spec"]["ports"][0]["nodePort"] == 30080


def test_volumes(export):
    r = export("""
        services:
          db:
            image: x
            restart: always
            volumes: [data:/var/lib/data, /anon, {type: volume, source: shared, target: /s, read_only: true}]
            tmpfs: ["/run:size=8m"]
          web:
            image: x
            restart: always
            deploy: {replicas: 2}
            volumes: ["shared:/s"]
        volumes: {data: {}, shared: {}}
    """, volume_size="5Gi")
    pvc = r.get("PersistentVolumeClaim", "data")["spec"]
    assert pvc == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}
    assert r.get("PersistentVolumeClaim", "shared")["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "ReadWriteMany" in r.warned("volumes.shared")[0]
    volumes = {v["name"]: v for v in r.pod("db")["volumes"]}
    assert volumes["vol-data"] == {"name": "vol-data", "persistentVolumeClaim": {"claimName": "data"}}
    assert volumes["db-volume-1"] == {"name": "db-volume-1", "emptyDir": {}}
    assert volumes["db-tmpfs-3"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Mi"}
    mounts = r.container("db")["volumeMounts"]
    assert {"name": "vol-shared", "mountPath": "/s", "readOnly": True} in mounts


def test_bind_mounts_are_refused_unless_allowed(export, tmp_path):
    text = 'services: {a: {image: x, restart: always, volumes: ["./conf:/etc/conf:ro", "/var/log:/logs"]}}'
    with pytest.raises(kubernetes.ExportError) as info:
        export(text)
    assert [str(p) for p in info.value.problems] == [
        f"services.a.volumes[{i}]: bind mount of {src}: a path on this host, not on the cluster's nodes; use a "
        "named volume, or pass --allow-hostpath to export it as a hostPath volume"
        for i, src in enumerate((tmp_path / "conf", "/var/log"))]
    r = export(text, allow_hostpath=True)
    volumes = r.pod("a")["volumes"]
    assert volumes[0]["hostPath"] == {"path": str(tmp_path / "conf"), "type": "DirectoryOrCreate"}
    assert "must exist on every node" in r.warned("services.a.volumes[0]")[0]


def test_an_idmap_bind_exports_like_any_bind(export):
    """No field to carry: a pod with hostUsers: false gets every volume, hostPath included, through
    an idmapped mount (what the opt-in asks of pysup), and without one nothing is idmapped (as
    under pysup). So the manifests are the same; only a writable bind without the opt-in is
    warned about, being written as host root in the pod where pysup would not."""
    text = ("services: {a: {image: x, restart: always, x-pysup: {userns: auto}, volumes: "
            '["/srv/data:/data:rw,idmap", {type: bind, source: /srv/logs, target: /logs, x-pysup: {idmap: true}}, '
            '"/srv/conf:/conf:ro"]}}')
    r = export(text, allow_hostpath=True)
    plain_text = text.replace(",idmap", "").replace(", x-pysup: {idmap: true}", "")
    assert "idmap" not in plain_text
    plain = export(plain_text, allow_hostpath=True)
    assert r.manifests == plain.manifests
    assert r.pod("a")["hostUsers"] is False
    assert [v["hostPath"]["path"] for v in r.pod("a")["volumes"]] == ["/srv/data", "/srv/logs", "/srv/conf"]
    as_host_root = "idmaps it, so the container's root writes there as host root, which pysup does only with idmap"
    assert [w for w in r.warnings if as_host_root in str(w)] == []  # opted in, or read-only
    flagged = [str(w).split(":")[0] for w in plain.warnings if as_host_root in str(w)]
    assert flagged == ["services.a.volumes[0]", "services.a.volumes[1]"]
    # no user namespace beside the host's network: nothing is idmapped, nothing to say
    no_userns = export(plain_text.replace("restart: always,", "restart: always, network_mode: host,"),
                       allow_hostpath=True)
    assert "hostUsers" not in no_userns.pod("a")
    assert [w for w in no_userns.warnings if as_host_root in str(w)] == []


def test_secrets_and_configs(export):
    r = export("""
        services:
          a:
            image: x
            restart: always
            secrets: [token, {source: token, target: /etc/token, mode: 0o400}]
            configs: [settings, {source: blob, target: /blob}]
        secrets: {token: {file: ./token.txt}}
        configs:
          settings: {content: "a = 1\\n"}
          blob: {file: ./blob.bin}
    """, files={"token.txt": "s3cret\n", "blob.bin": b"\xff\x00"})
    secret = r.get("Secret", "token")
    assert secret["type"] == "Opaque"
    assert base64.b64decode(secret["data"]["token"]) == b"s3cret\n"
    assert r.get("ConfigMap", "settings")["data"] == {"settings": "a = 1\n"}
    assert base64.b64decode(r.get("ConfigMap", "blob")["binaryData"]["blob"]) == b"\xff\x00"
    mounts = r.container("a")["volumeMounts"]
    assert [(m["mountPath"], m["subPath"], m["readOnly"]) for m in mounts] == [
        ("/run/secrets/token", "token", True), ("/etc/token", "token", True),
        ("/settings", "settings", True), ("/blob", "blob", True)]
    volumes = {v["name"]: v for v in r.pod("a")["volumes"]}
    assert volumes["secret-token-a-1"]["secret"] == {"secretName": "token",
                                                      "items": [{"key": "token", "path": "token", "mode": 0o400}]}
    assert "not encrypted" in r.warned("secrets.token")[0]


def test_networks_become_network_policies(export):
    r = export("""
        services:
          web: {image: x, restart: always, networks: [front, back], ports: ["80:80"]}
          api: {image: x, restart: always, networks: [back]}
          admin: {image: x, restart: always, networks: [front]}
        networks: {front: {}, back: {}}
    """)
    assert sorted(r.kinds("NetworkPolicy")) == ["network-back", "network-front", "web-published"]
    back = r.get("NetworkPolicy", "network-back")["spec"]
    label = {"app.kubernetes.io/part-of": r.get("Deployment", "api")["metadata"]["labels"]["app.kubernetes.io/part-of"],
             "network.pysup.io/back": "true"}
    assert back == {"podSelector": {"matchLabels": label}, "policyTypes": ["Ingress"],
                    "ingress": [{"from": [{"podSelector": {"matchLabels": label}}]}]}
    pod_labels = r.get("Deployment", "api")["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["network.pysup.io/back"] == "true" and "network.pysup.io/front" not in pod_labels
    assert r.get("NetworkPolicy", "web-published")["spec"]["ingress"] == [{"ports": [{"port": 80, "protocol": "TCP"}]}]
    r = export("services: {web: {image: x, restart: always}}", network_policies=False)
    assert r.kinds("NetworkPolicy") == []
    assert not any(k.startswith("network.pysup.io/") for k in r.get("Deployment", "web")["metadata"]["labels"])


@pytest.mark.parametrize("order, rolling", [
    ("start-first", {"maxSurge": 2, "maxUnavailable": 0}),
    ("stop-first", {"maxSurge": 0, "maxUnavailable": 2}),
])
def test_update_config_becomes_the_rolling_update(export, order, rolling):
    r = export(f"""
        services:
          web:
            image: x
            restart: always
            deploy: {{replicas: 4, update_config: {{parallelism: 2, delay: 5s, monitor: 10s, order: {order},
                                                   failure_action: rollback}}}}
    """)
    spec = r.get("Deployment", "web")["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": rolling}
    assert spec["minReadySeconds"] == 15
    assert "never rolled back" in r.warned("services.web.deploy.update_config.failure_action")[0]


def test_host_namespaces_init_dns_and_hosts(export):
    r = export("""
        services:
          a:
            image: x
            restart: always
            network_mode: host
            pid: host
            ipc: host
            init: true
            hostname: box
            dns: [10.0.0.2]
            dns_search: [example.com]
            dns_opt: ["ndots:2", "rotate"]
            extra_hosts: ["db=10.0.0.5", "cache:10.0.0.5", "meta=169.254.169.254"]
            sysctls: {net.core.somaxconn: 1024}
            x-pysup: {userns: true}
    """)
    pod = r.pod("a")
    assert (pod["hostNetwork"], pod["hostPID"], pod["hostIPC"]) == (True, True, True)
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert "shareProcessNamespace" not in pod  # refused beside hostPID: warned
    assert pod["hostname"] == "box"
    assert pod["dnsConfig"] == {"nameservers": ["10.0.0.2"], "searches": ["example.com"],
                                "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}]}
    assert pod["hostAliases"] == [{"ip": "10.0.0.5", "hostnames": ["db", "cache"]},
                                  {"ip": "169.254.169.254", "hostnames": ["meta"]}]
    assert "securityContext" not in pod  # net.* sysctls are refused beside hostNetwork: warned
    assert "hostUsers" not in pod and r.warned("services.a.x-pysup.userns")
    r = export("services: {a: {image: x, restart: always, init: true, sysctls: {net.core.somaxconn: 1024},"
               " x-pysup: {userns: true}}}")
    assert r.pod("a")["hostUsers"] is False
    assert r.pod("a")["shareProcessNamespace"] is True
    assert r.pod("a")["securityContext"] == {"sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]}


def test_image_host_and_rootfs_use_the_host_image(export):
    r = export("""
        services:
          a: {image: host, restart: always, command: ["true"]}
          b: {restart: always, command: ["true"], x-pysup: {rootfs: ./root}}
    """, host_image="debian:12")
    assert r.container("a")["image"] == r.container("b")["image"] == "debian:12"
    assert "--host-image" in r.warned("services.a.image")[0]
    assert "build an image" in r.warned("services.b.x-pysup.rootfs")[0]


def test_names_are_made_kubernetes_names_and_collisions_refused(export):
    r = export("services: {My_App: {image: x, restart: always}, 1st: {image: x, restart: always}}")
    assert sorted(r.kinds("Deployment")) == ["my-app", "svc-1st"]
    assert r.warned("services.My_App") == [
        'exported as "my-app" (Kubernetes names are lower case letters, digits and "-"): other services must use '
        "that host name"]
    with pytest.raises(kubernetes.ExportError) as info:
        export("services: {my-app: {image: x}, my_app: {image: x}}")
    assert [str(p) for p in info.value.problems] == [
        'services.my_app: its Kubernetes name "my-app" is also the name of service "my-app": rename one of them']


def test_namespace_goes_on_every_object(export):
    r = export("services: {a: {image: x, restart: always, ports: ['80:80']}}", namespace="prod")
    assert {m["metadata"]["namespace"] for m in r.manifests} == {"prod"}


def test_hooks_become_lifecycle_handlers(export):
    r = export("""
        services:
          a:
            image: x
            restart: always
            post_start: [{command: ["touch", "/tmp/up"]}]
            pre_stop: [{command: "nginx -s quit", working_dir: /srv}, {command: ["sleep", "1"], user: root}]
    """)
    lc = r.container("a")["lifecycle"]
    assert lc["postStart"] == {"exec": {"command": ["touch", "/tmp/up"]}}
    assert lc["preStop"] == {"exec": {"command": ["/bin/sh", "-c", "(cd /srv && nginx -s quit) && sleep 1"]}}
    assert r.warned("services.a.pre_stop[1]") == ["user and privileged: the hook runs as the container does"]


def test_ignored_keys_are_all_warned(export):
    r = export("""
        services:
          a:
            image: x
            restart: always
            ulimits: {nofile: 1024}
            devices: ["/dev/fuse:/dev/fuse"]
            logging: {driver: json-file}
            container_name: the-a
            domainname: example.com
            x-pysup: {load_balance: least-connections, backoff: {base: 1s}}
    """)
    for key in ("ulimits", "devices", "logging", "container_name", "domainname", "x-pysup.load_balance",
                "x-pysup.backoff"):
        assert r.warned(f"services.a.{key}"), key


def test_kube_version_is_checked():
    with pytest.raises(kubernetes.ExportError, match=r"--kube-version 1\.12: expected one of 1\.25 \.\. 1\.37"):
        kubernetes.parse_kube_version("1.12")
    assert kubernetes.parse_kube_version("v1.30.2") == (1, 30)


def test_a_wait_across_networks_gets_a_narrow_network_policy(export):
    r = export("""
        services:
          db: {image: x, restart: always, expose: ["5432"], networks: [back],
               healthcheck: {test: ["CMD", "true"]}}
          web: {image: x, restart: always, networks: [front], depends_on: {db: {condition: service_healthy}}}
        networks: {front: {}, back: {}}
    """)
    policy = r.get("NetworkPolicy", "db-from-web")["spec"]
    web = r.get("Service", "web")["spec"]["selector"]
    assert policy["ingress"] == [{"from": [{"podSelector": {"matchLabels": web}}],
                                  "ports": [{"port": 5432, "protocol": "TCP"}]}]
    assert "shares no network" in r.warned("services.web.depends_on.db")[0]
    r = export("""
        services:
          db: {image: x, restart: always, expose: ["5432"], healthcheck: {test: ["CMD", "true"]}}
          web: {image: x, restart: always, depends_on: {db: {condition: service_healthy}}}
    """)
    assert ("NetworkPolicy", "db-from-web") not in r.by


def test_what_an_init_container_cannot_have_is_warned(export):
    r = export("""
        services:
          seed: {image: x, restart: "no", expose: ["80"], healthcheck: {test: ["CMD", "true"]},
                 post_start: [{command: ["true"]}]}
          app: {image: x, restart: always, depends_on: {seed: {condition: service_completed_successfully}}}
    """)
    init = r.pod("app")["initContainers"][0]
    assert not {"livenessProbe", "readinessProbe", "startupProbe", "lifecycle"} & set(init)
    for key in ("healthcheck", "post_start", "expose"):
        assert r.warned(f"services.seed.{key}") == ["not for an init container: ignored"], key


def test_two_objects_with_one_name_are_refused_with_both_keys(export):
    with pytest.raises(kubernetes.ExportError) as info:
        export("""
            services:
              web: {image: x, restart: always, ports: ["80:80"]}
              web-published: {image: x, restart: always}
            volumes: {db_data: {}, db-data: {}}
        """)
    assert [str(p) for p in info.value.problems] == [
        'services.web-published: its Service "web-published" has the name of the one from services.web: '
        "rename one of them"]


def test_init_container_names_never_clash_with_the_main_one(export):
    r = export("""
        services:
          db: {image: x, restart: always, healthcheck: {test: ["CMD", "true"]}}
          wait-db: {image: x, restart: always, depends_on: {db: {condition: service_healthy}}}
    """)
    assert [c["name"] for c in r.pod("wait-db")["initContainers"]] == ["wait-db-2"]


def test_what_the_api_server_refuses_beside_host_namespaces_is_dropped_with_a_warning(export):
    r = export("""
        services:
          a:
            image: x
            restart: always
            network_mode: host
            pid: host
            init: true
            sysctls: {net.core.somaxconn: 1024, kernel.domainname: x}
            environment: {"1BAD": x, "GOOD": y}
    """)
    pod = r.pod("a")
    assert "shareProcessNamespace" not in pod and r.warned("services.a.init")
    assert pod["securityContext"]["sysctls"] == [{"name": "kernel.domainname", "value": "x"}]
    assert r.warned("services.a.sysctls.net.core.somaxconn")
    assert r.container("a")["env"] == [{"name": "GOOD", "value": "y"}]
    assert "dropped" in r.warned("services.a.environment.1BAD")[0]
