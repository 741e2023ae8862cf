"""A `Stack` as Kubernetes manifests: a pure function, no cluster, no I/O but reading the files
of secrets and configs.

`export(stack, options)` returns the manifests (plain dicts, in a stable order) and a warning for
every key that Kubernetes cannot express, each naming the service and the key. What cannot be
exported safely (a bind mount without `allow_hostpath`, two services whose Kubernetes names
collide) is refused with a `SpecError` listing every such problem. specs/kubernetes-export.md is
the reference for each mapping and what it loses.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import shlex
import signal
from collections.abc import Iterable
from typing import Any, Literal

import attrs

from ..config.model import (
    Backoff, FileObject, FileRef, Healthcheck, Hook, Mount, Service, Stack, UpdateConfig,
)
from ..config.units import signal_name
from ..errors import KeyPath, Problem, SpecError, format_path
from ..runtime.userns import wanted as userns_wanted

# Kubernetes minor versions whose API we know (kubernetes-validate ships their schemas).
KUBE_VERSIONS = tuple(f"1.{minor}" for minor in range(25, 38))
DEFAULT_KUBE_VERSION = "1.33"
STOP_SIGNAL_SINCE = (1, 33)  # Lifecycle.stopSignal (alpha, ContainerStopSignals feature gate)
DEFAULT_IMAGE = "busybox:1.36"
INT32_MAX = 2**31 - 1

PART_OF = "app.kubernetes.io/part-of"
NAME = "app.kubernetes.io/name"
MANAGED_BY = "app.kubernetes.io/managed-by"
NETWORK_LABEL = "network.pysup.io/"

# Order of kinds in the output: what others refer to comes first.
KIND_ORDER = ("ConfigMap", "Secret", "PersistentVolumeClaim", "Service", "NetworkPolicy", "Deployment", "Job")

_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DATA_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_NUMERIC = re.compile(r"[0-9]+")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_IPC_SYSCTL = re.compile(r"kernel\.(shm|msg|sem)|fs\.mqueue\.")


class ExportError(SpecError):
    """The stack cannot be exported as asked: every reason, each naming the service and key."""


@attrs.frozen(kw_only=True)
class Options:
    namespace: str | None = None
    kube_version: str = DEFAULT_KUBE_VERSION
    publish: Literal["LoadBalancer", "NodePort"] = "LoadBalancer"  # the Service type for published ports
    allow_hostpath: bool = False  # bind mounts become hostPath volumes instead of being refused
    host_image: str = DEFAULT_IMAGE  # stands for `image: host` and `x-pysup.rootfs`
    wait_image: str = DEFAULT_IMAGE  # runs the init containers that wait for healthy dependencies
    volume_size: str = "1Gi"  # requested storage of each PersistentVolumeClaim
    network_policies: bool = True


@attrs.frozen
class Exported:
    manifests: tuple[dict, ...]
    warnings: tuple[Problem, ...]


def export(stack: Stack, options: Options = Options()) -> Exported:
    """The stack's Kubernetes objects; raises `ExportError` when something must not be exported."""
    return _Exporter(stack, options).run()


def parse_kube_version(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"v?(\d+)\.(\d+)(\.\d+)?", text.strip())
    if not m or f"{m[1]}.{m[2]}" not in KUBE_VERSIONS:
        raise ExportError(f"--kube-version {text}: expected one of {KUBE_VERSIONS[0]} .. {KUBE_VERSIONS[-1]}")
    return int(m[1]), int(m[2])


# ---- names and units ------------------------------------------------------------------------

def dns_label(text: str, *, prefix: str = "x") -> str:
    """`text` as an RFC 1035 label (what a Service name must be): lower case letters, digits and
    '-', starting with a letter, at most 63 characters (a long name keeps a hash of the whole)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"{prefix}-{name}".rstrip("-")
    if len(name) > 63:
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        name = f"{name[:54].rstrip('-')}-{digest}"
    return name


def label_value(text: str) -> str:
    if len(text) <= 63 and _LABEL_VALUE.fullmatch(text):
        return text
    return dns_label(text)


def quantity_bytes(n: int) -> str:
    for unit, size in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def quantity_cpu(cores: float) -> str:
    milli = max(1, round(cores * 1000))
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def escape_expansion(text: str) -> str:
    """Kubernetes expands `$(VAR)` in command, args and env values, and `$$` means `$`: doubling
    every `$` keeps the text exactly as the compose file meant it."""
    return text.replace("$", "$$")


# ---- the exporter ---------------------------------------------------------------------------

class _Exporter:
    def __init__(self, stack: Stack, options: Options):
        self.stack = stack
        self.opts = options
        self.version = parse_kube_version(options.kube_version)
        self.warnings: list[Problem] = []
        self.errors: list[Problem] = []
        self.manifests: list[dict] = []
        self.origins: dict[tuple[str, str], KeyPath] = {}  # (kind, name) -> the key it comes from
        self.names = self._service_names()
        # Services that others wait for with service_completed_successfully run as init
        # containers of those others, not as workloads of their own.
        self.init_only = {
            d.service for s in stack.services.values() for d in s.depends_on
            if d.condition == "service_completed_successfully" and d.service in stack.services
        }
        self.volume_users: dict[str, set[str]] = {}
        self.used_volumes: set[str] = set()
        self.used_files: dict[str, set[str]] = {"secrets": set(), "configs": set()}
        self.pod_owner = ""  # the service whose pod is being built
        self.wait_paths: set[tuple[str, str, int]] = set()  # (waiting service, dependency, port)

    # -- helpers
    def warn(self, path: KeyPath, message: str) -> None:
        self.warnings.append(Problem(message, path=path))

    def refuse(self, path: KeyPath, message: str) -> None:
        self.errors.append(Problem(message, path=path))

    def add(self, path: KeyPath, manifest: dict) -> None:
        """One more object; one whose kind and name another already has is refused, located."""
        key = (manifest["kind"], manifest["metadata"]["name"])
        if path[:1] == ("services",) and path[1] in self.collided:
            return  # its name was refused already
        if key in self.origins:
            self.refuse(path, f'its {key[0]} "{key[1]}" has the name of the one from '
                              f'{format_path(self.origins[key])}: rename one of them')
            return
        self.origins[key] = path
        self.manifests.append(manifest)

    def meta(self, name: str, labels: dict[str, str] | None = None, annotations: dict | None = None) -> dict:
        meta: dict[str, Any] = {"name": name}
        if self.opts.namespace:
            meta["namespace"] = self.opts.namespace
        all_labels = {PART_OF: label_value(self.stack.name), MANAGED_BY: "pysup", **(labels or {})}
        meta["labels"] = all_labels
        if annotations:
            meta["annotations"] = annotations
        return meta

    def selector(self, service: str) -> dict[str, str]:
        return {PART_OF: label_value(self.stack.name), NAME: self.names[service]}

    def _service_names(self) -> dict[str, str]:
        names: dict[str, str] = {}
        taken: dict[str, str] = {}
        self.collided: set[str] = set()
        for name in self.stack.services:
            k8s = dns_label(name, prefix="svc")
            if k8s in taken:
                self.refuse(("services", name), f'its Kubernetes name "{k8s}" is also the name of service '
                                                f'"{taken[k8s]}": rename one of them')
                self.collided.add(name)
            elif k8s != name:
                self.warn(("services", name), f'exported as "{k8s}" (Kubernetes names are lower case letters, '
                                              f'digits and "-"): other services must use that host name')
            taken[k8s] = name
            names[name] = k8s
        return names

    def seconds(self, value: float, path: KeyPath, *, minimum: int = 1) -> int:
        whole = max(minimum, math.ceil(value))
        if whole != value:
            self.warn(path, f"{value:g}s rounded to {whole}s (Kubernetes counts whole seconds, at least {minimum})")
        return whole

    # -- the whole stack
    def run(self) -> Exported:
        for name, svc in self.stack.services.items():
            self.export_service(name, svc)
        self.export_volumes()
        self.export_files("secrets")
        self.export_files("configs")
        if self.opts.network_policies:
            self.export_network_policies()
        self.stack_warnings()
        if self.errors:
            exc = ExportError(self.errors)
            exc.warnings = tuple(dict.fromkeys(self.warnings))
            raise exc
        manifests = sorted(self.manifests, key=lambda m: (KIND_ORDER.index(m["kind"]), m["metadata"]["name"]))
        return Exported(tuple(manifests), tuple(dict.fromkeys(self.warnings)))

    def stack_warnings(self) -> None:
        if self.stack.x.backoff != Backoff():
            self.warn(("x-pysup", "backoff"), "the kubelet's restart back-off (10s doubling to 5m) replaces it")
        if self.stack.x.subnet_pool:
            self.warn(("x-pysup", "subnet_pool"), "the cluster's pod network decides addresses")
        if self.stack.x.registries:
            self.warn(("x-pysup", "registries"), "configure mirrors and insecure registries on the nodes' runtime")
        for key, net in self.stack.networks.items():
            path = ("networks", key)
            if net.external:
                self.warn(path, "external network: no Kubernetes equivalent, its members are not isolated by it")
            if net.internal:
                self.warn((*path, "internal"), "egress is not restricted: pods on it can still reach the outside")
            if net.driver or net.driver_opts or net.ipam or net.enable_ipv6 or net.attachable or net.labels:
                self.warn(path, "driver, driver_opts, ipam, enable_ipv6, attachable and labels: the cluster "
                                "network's to decide, ignored")

    # -- one service
    def export_service(self, name: str, svc: Service) -> None:
        path = ("services", name)
        self.service_warnings(name, svc)
        self.export_services(name, svc)
        if name in self.init_only:
            dependents = sorted(s.name for s in self.stack.services.values()
                                if any(d.service == name and d.condition == "service_completed_successfully"
                                       for d in s.depends_on))
            self.warn(path, "runs as an init container of each pod of " + ", ".join(dependents)
                      + " (depended on with service_completed_successfully): once per pod, not once per stack")
            for key in ("healthcheck", "post_start", "pre_stop", "ports", "expose"):
                if getattr(svc, key) and not (key == "healthcheck" and svc.healthcheck.disabled):
                    self.warn((*path, key), "not for an init container: ignored")
            return
        pod = self.pod(name, svc)
        labels = self.workload_labels(name, svc)
        condition = svc.restart.condition
        if condition in ("no", "on-failure"):
            pod["restartPolicy"] = "Never" if condition == "no" else "OnFailure"
            backoff = 0 if condition == "no" else (
                svc.restart.max_attempts if svc.restart.max_attempts is not None else INT32_MAX)
            if svc.update_config != UpdateConfig():
                self.warn((*path, "deploy", "update_config"), "a Job has no rolling update")
            spec = {"backoffLimit": backoff, "completions": svc.replicas, "parallelism": svc.replicas,
                    "template": {"metadata": {"labels": labels}, "spec": pod}}
            self.add(path, {"apiVersion": "batch/v1", "kind": "Job",
                                   "metadata": self.meta(self.names[name], labels, self.annotations(name, svc)),
                                   "spec": spec})
            return
        pod["restartPolicy"] = "Always"
        spec = {"replicas": svc.replicas, "selector": {"matchLabels": self.selector(name)}}
        spec.update(self.strategy(name, svc))
        spec["template"] = {"metadata": {"labels": labels}, "spec": pod}
        self.add(path, {"apiVersion": "apps/v1", "kind": "Deployment",
                               "metadata": self.meta(self.names[name], labels, self.annotations(name, svc)),
                               "spec": spec})

    def workload_labels(self, name: str, svc: Service) -> dict[str, str]:
        labels = dict(self.selector(name))
        for key, value in svc.labels.items():
            if self.valid_label(key, value):
                labels[key] = value
        if self.opts.network_policies and svc.network_mode is None:
            for att in svc.networks:
                labels[NETWORK_LABEL + label_value(att.network)] = "true"
        return dict(sorted(labels.items()))

    @staticmethod
    def valid_label(key: str, value: str) -> bool:
        prefix, _, name = key.rpartition("/")
        prefix_ok = not prefix or (len(prefix) <= 253 and bool(_DNS_SUBDOMAIN.fullmatch(prefix)))
        return (prefix_ok and bool(_LABEL_NAME.fullmatch(name)) and len(name) <= 63
                and bool(_LABEL_VALUE.fullmatch(value)) and len(value) <= 63)

    def annotations(self, name: str, svc: Service) -> dict[str, str] | None:
        """Labels Kubernetes would refuse as labels (a value with spaces, a long one) become annotations."""
        out = {k: v for k, v in svc.labels.items() if not self.valid_label(k, v)}
        for key in out:
            self.warn(("services", name, "labels", key), "not a valid Kubernetes label: kept as an annotation")
        return dict(sorted(out.items())) or None

    def strategy(self, name: str, svc: Service) -> dict:
        uc = svc.update_config
        path = ("services", name, "deploy", "update_config")
        if svc.rollback_config != UpdateConfig():
            self.warn(("services", name, "deploy", "rollback_config"),
                      "Kubernetes rolls back only on request (kubectl rollout undo)")
        if uc == UpdateConfig():
            return {}
        step: int | str = uc.parallelism if uc.parallelism else "100%"
        if uc.order == "start-first":
            rolling = {"maxSurge": step, "maxUnavailable": 0}
        else:
            rolling = {"maxSurge": 0, "maxUnavailable": step}
        out: dict[str, Any] = {"strategy": {"type": "RollingUpdate", "rollingUpdate": rolling}}
        ready = math.ceil(uc.delay + uc.monitor)
        if ready:
            out["minReadySeconds"] = ready
        if uc.failure_action != "pause":
            self.warn((*path, "failure_action"), f"{uc.failure_action}: a stalled rollout is only reported "
                                                 "(progressDeadlineSeconds), never rolled back or continued")
        if uc.max_failure_ratio:
            self.warn((*path, "max_failure_ratio"), "no Kubernetes equivalent")
        return out

    # -- the pod
    def pod(self, name: str, svc: Service) -> dict:
        path = ("services", name)
        volumes: dict[str, dict] = {}
        init: list[dict] = []
        self.pod_owner = name
        self.init_containers(name, svc, init, volumes, seen=set())
        main = self.container(name, svc, volumes)
        pod: dict[str, Any] = {}
        taken = {main["name"]}
        for container in init:  # container names are unique in a pod: `wait-db` may be a service too
            base, n = container["name"], 1
            while container["name"] in taken:
                n += 1
                container["name"] = dns_label(f"{base}-{n}")
            taken.add(container["name"])
        if init:
            pod["initContainers"] = init
        pod["containers"] = [main]
        if svc.stop_signal is not None and self.version >= STOP_SIGNAL_SINCE:
            pod["os"] = {"name": "linux"}  # stopSignal needs the pod's OS
        pod["terminationGracePeriodSeconds"] = self.seconds(svc.stop_grace_period, (*path, "stop_grace_period"),
                                                            minimum=0)
        mode = svc.network_mode
        if mode == "host":
            pod["hostNetwork"] = True
            pod["dnsPolicy"] = "ClusterFirstWithHostNet"
        elif mode == "none":
            self.warn((*path, "network_mode"), "none: a pod always has a network")
        elif mode:
            self.warn((*path, "network_mode"), f"{mode}: pods cannot share another pod's network; "
                                               "it gets its own (put both containers in one pod by hand)")
        if svc.pid == "host":
            pod["hostPID"] = True
        elif svc.pid:
            self.warn((*path, "pid"), f"{svc.pid}: pods cannot share another pod's PID namespace")
        if svc.ipc == "host":
            pod["hostIPC"] = True
        elif svc.ipc and svc.ipc.startswith("service:"):
            self.warn((*path, "ipc"), f"{svc.ipc}: pods cannot share another pod's IPC namespace")
        if svc.init and not pod.get("hostPID"):
            pod["shareProcessNamespace"] = True  # the pause container is PID 1 and reaps zombies
        elif svc.init:
            self.warn((*path, "init"), "not with pid: host (Kubernetes refuses a shared process namespace there)")
        if svc.hostname:
            pod["hostname"] = dns_label(svc.hostname)
        if svc.domainname:
            self.warn((*path, "domainname"), "no Kubernetes equivalent (pod subdomains come from a headless Service)")
        self.dns(name, svc, pod)
        if svc.extra_hosts:
            by_ip: dict[str, list[str]] = {}
            for host, ip in svc.extra_hosts:
                by_ip.setdefault(ip, []).append(host)
            pod["hostAliases"] = [{"ip": ip, "hostnames": hosts} for ip, hosts in sorted(by_ip.items())]
        security = self.pod_security(name, svc, pod)
        if security:
            pod["securityContext"] = security
        if volumes:
            pod["volumes"] = [volumes[k] for k in sorted(volumes)]
        return pod

    def dns(self, name: str, svc: Service, pod: dict) -> None:
        config: dict[str, Any] = {}
        if svc.dns:
            config["nameservers"] = list(svc.dns[:3])
            dropped = "; only the first 3 are kept" if len(svc.dns) > 3 else ""
            self.warn(("services", name, "dns"),
                      f"added after the cluster DNS (kept first, so service names still resolve){dropped}")
        if svc.dns_search:
            config["searches"] = list(svc.dns_search)
        if svc.dns_opt:
            config["options"] = [dict(zip(("name", "value"), o.split(":", 1))) for o in svc.dns_opt]
        if config:
            pod["dnsConfig"] = config

    def pod_security(self, name: str, svc: Service, pod: dict) -> dict:
        security: dict[str, Any] = {}
        sysctls = []
        for key, value in svc.sysctls.items():
            if (pod.get("hostNetwork") and key.startswith("net.")) or (pod.get("hostIPC") and _IPC_SYSCTL.match(key)):
                self.warn(("services", name, "sysctls", key), "not with the host's namespace: Kubernetes refuses it")
            else:
                sysctls.append({"name": key, "value": str(value)})
        if sysctls:
            security["sysctls"] = sysctls
        path = ("services", name, *(("x-pysup", "userns") if svc.x.userns else ("userns_mode",)))
        if userns_wanted(svc):
            if not _host_users_false(svc):
                self.warn(path, "not with host namespaces: no user namespace")
            else:
                pod["hostUsers"] = False
                self.warn(path,
                          "hostUsers: false needs the UserNamespacesSupport feature and a runtime that has it")
        return security

    def init_containers(self, name: str, svc: Service, out: list[dict], volumes: dict[str, dict],
                        seen: set[str]) -> None:
        """Waits for healthy dependencies, then the one-shot dependencies (with their own waits),
        in depends_on order, each once."""
        for dep in svc.depends_on:
            path = ("services", name, "depends_on", dep.service)
            if dep.service not in self.stack.services:
                continue  # an optional dependency (required: false) that is not enabled
            key = f"{dep.condition}:{dep.service}"
            if key in seen:
                continue
            seen.add(key)
            if dep.condition == "service_completed_successfully":
                dsvc = self.stack.services[dep.service]
                self.init_containers(dep.service, dsvc, out, volumes, seen)
                container = self.container(dep.service, dsvc, volumes)
                container["name"] = dns_label(f"run-{self.names[dep.service]}")
                for probe in ("livenessProbe", "readinessProbe", "startupProbe", "lifecycle"):
                    container.pop(probe, None)
                out.append(container)
            elif dep.condition == "service_healthy":
                wait = self.wait_container(dep.service, path)
                if wait:
                    out.append(wait)
            else:
                self.warn(path, "service_started: Kubernetes starts pods in any order (not enforced)")
            if dep.restart:
                self.warn((*path, "restart"), "pods are not restarted when a dependency is replaced")

    def wait_container(self, dep: str, path: KeyPath) -> dict | None:
        service = self.planned_service(dep)
        if service is None:
            self.warn(path, f'"{dep}" has no Kubernetes Service to wait for (network_mode): not enforced')
            return None
        host = self.names[dep]
        tcp = [p["port"] for p in service.get("ports", ()) if p.get("protocol", "TCP") == "TCP"]
        if tcp:
            test = f"nc -z -w 2 {host} {tcp[0]}"
            self.wait_paths.add((self.pod_owner, dep, tcp[0]))
            what = f"{host}:{tcp[0]} to accept connections"
        elif service.get("clusterIP") == "None":
            test = f"nslookup {host}"
            what = f"{host} to have a ready pod"
        else:
            self.warn(path, f'"{dep}" has only UDP ports: the wait cannot see it answer, not enforced')
            return None
        script = f"until {test} >/dev/null 2>&1; do echo waiting for {what}; sleep 2; done"
        return {"name": dns_label(f"wait-{host}"), "image": self.opts.wait_image, "command": ["/bin/sh", "-c", script]}

    def planned_service(self, name: str) -> dict | None:
        """The spec of the in-cluster Service `name` gets (None: it gets none), before it is built."""
        svc = self.stack.services[name]
        if name in self.init_only or svc.network_mode == "none" or (svc.network_mode or "").startswith("service:"):
            return None
        ports = self.cluster_ports(name, svc)
        return {"ports": ports} if ports else {"clusterIP": "None"}

    # -- the container
    def container(self, name: str, svc: Service, volumes: dict[str, dict]) -> dict:
        path = ("services", name)
        c: dict[str, Any] = {"name": self.names[name], "image": self.image(name, svc)}
        policy = {"always": "Always", "never": "Never", "missing": "IfNotPresent", "if_not_present": "IfNotPresent"}
        if svc.pull_policy in policy:
            c["imagePullPolicy"] = policy[svc.pull_policy]
        elif svc.pull_policy:
            self.warn((*path, "pull_policy"), f"{svc.pull_policy}: no Kubernetes equivalent (the default applies)")
        if svc.entrypoint is not None:
            c["command"] = [escape_expansion(a) for a in svc.entrypoint]
        if svc.command is not None:
            c["args"] = [escape_expansion(a) for a in svc.command]
        if svc.working_dir:
            c["workingDir"] = svc.working_dir
        env = []
        for key, value in svc.environment.items():
            if _ENV_NAME.fullmatch(key):
                env.append({"name": key, "value": escape_expansion(value)})
            else:
                self.warn((*path, "environment", key), "not a name Kubernetes accepts (letters, digits, "
                                                       "'_', '-', '.'; not starting with a digit): dropped")
        if env:
            c["env"] = env
        ports = self.container_ports(name, svc)
        if ports:
            c["ports"] = ports
        resources = self.resources(name, svc)
        if resources:
            c["resources"] = resources
        mounts = self.mounts(name, svc, volumes)
        if mounts:
            c["volumeMounts"] = mounts
        if svc.healthcheck:
            c.update(self.probes(name, svc, svc.healthcheck))
        lifecycle = self.lifecycle(name, svc)
        if lifecycle:
            c["lifecycle"] = lifecycle
        security = self.container_security(name, svc)
        if security:
            c["securityContext"] = security
        for key, value in (("ulimits", svc.ulimits), ("devices", svc.devices), ("volumes_from", svc.volumes_from),
                           ("logging", svc.logging), ("container_name", svc.container_name)):
            if value:
                self.warn((*path, key), "no Kubernetes equivalent: ignored")
        if svc.x.load_balance != "round-robin":
            self.warn((*path, "x-pysup", "load_balance"), "the cluster's Service proxy decides how connections spread")
        if svc.x.backoff is not None:
            self.warn((*path, "x-pysup", "backoff"), "the kubelet's restart back-off (10s doubling to 5m) replaces it")
        if svc.restart.delay is not None or svc.restart.window is not None:
            self.warn((*path, "deploy", "restart_policy"),
                      "delay and window: the kubelet's restart back-off replaces them")
        if svc.restart.condition == "always" or svc.restart.condition == "unless-stopped":
            if svc.restart.max_attempts is not None:
                self.warn((*path, "deploy", "restart_policy", "max_attempts"), "a Deployment restarts without limit")
        return c

    def image(self, name: str, svc: Service) -> str:
        if svc.x.rootfs:
            self.warn(("services", name, "x-pysup", "rootfs"), f"a directory on this host: build an image of it; "
                                                                f"exported with {self.opts.host_image}")
            return self.opts.host_image
        if svc.image in (None, "host"):
            self.warn(("services", name, "image"), f"host: the host's own files are not an image; "
                                                   f"exported with {self.opts.host_image} (--host-image)")
            return self.opts.host_image
        return svc.image

    def container_ports(self, name: str, svc: Service) -> list[dict]:
        out: dict[tuple[int, str], dict] = {}
        for port in svc.ports:
            proto = port.protocol.upper()
            entry: dict[str, Any] = {"containerPort": port.target, "protocol": proto}
            if port.name:
                entry = {"name": self.port_name(port.name, port.target, proto), **entry}
            out.setdefault((port.target, proto), entry)
        for number, proto in self.expose_ports(name, svc):
            out.setdefault((number, proto), {"containerPort": number, "protocol": proto})
        names: set[str] = set()
        for key in sorted(out):  # a name given twice: the later port goes unnamed (names are optional)
            if out[key].get("name") in names:
                del out[key]["name"]
            names.add(out[key].get("name", ""))
        return [out[k] for k in sorted(out)]

    def expose_ports(self, name: str, svc: Service) -> list[tuple[int, str]]:
        found: list[tuple[int, str]] = []
        for item in svc.expose:
            spec, _, proto = str(item).partition("/")
            low, _, high = spec.partition("-")
            for number in range(int(low), int(high or low) + 1):
                found.append((number, (proto or "tcp").upper()))
        return found

    @staticmethod
    def port_name(name: str | None, number: int, proto: str) -> str:
        if name:
            clean = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:15].strip("-")
            if clean and re.search(r"[a-z]", clean):
                return clean
        return f"{proto.lower()}-{number}"

    def resources(self, name: str, svc: Service) -> dict:
        r = svc.resources
        path = ("services", name)
        limits: dict[str, str] = {}
        requests: dict[str, str] = {}
        if r.cpus:
            limits["cpu"] = quantity_cpu(r.cpus)
        if r.memory:
            limits["memory"] = quantity_bytes(r.memory)
        if r.cpu_shares:
            requests["cpu"] = quantity_cpu(r.cpu_shares / 1024)
            if r.cpus and r.cpu_shares / 1024 > r.cpus:
                requests["cpu"] = limits["cpu"]
                self.warn((*path, "cpu_shares"), "more than the cpus limit: the request is capped at the limit")
        if r.memory_reservation:
            if r.memory and r.memory_reservation > r.memory:
                self.warn((*path, "mem_reservation"), "larger than the memory limit: the request is capped at it")
                requests["memory"] = quantity_bytes(r.memory)
            else:
                requests["memory"] = quantity_bytes(r.memory_reservation)
        if r.pids not in (None, -1):
            self.warn((*path, "pids_limit"), "Kubernetes limits processes per node (kubelet podPidsLimit), not per pod")
        if r.memswap is not None:
            self.warn((*path, "memswap_limit"), "swap is a node setting in Kubernetes: ignored")
        if r.cpuset:
            self.warn((*path, "cpuset"), "CPU pinning is the kubelet's CPU manager's: ignored")
        if r.io_weight is not None or r.io_weight_device:
            self.warn((*path, "blkio_config"), "no block I/O weights in Kubernetes: ignored")
        out: dict[str, dict] = {}
        if limits:
            out["limits"] = limits
        if requests:
            out["requests"] = requests
        return out

    def probes(self, name: str, svc: Service, hc: Healthcheck) -> dict:
        path = ("services", name, "healthcheck")
        if not hc.test:
            self.warn(path, "no test: the image's health check, which Kubernetes does not run: no probes")
            return {}
        hc = hc.with_defaults()
        kind = hc.test[0]
        if kind == "CMD":
            command = list(hc.test[1:])
        elif kind == "CMD-SHELL":
            command = ["/bin/sh", "-c", " ".join(hc.test[1:])]
        else:
            return {}
        period = self.seconds(hc.interval, (*path, "interval"))
        timeout = self.seconds(hc.timeout, (*path, "timeout"))
        probe = {"exec": {"command": command}, "periodSeconds": period, "timeoutSeconds": timeout,
                 "failureThreshold": max(1, hc.retries)}
        out: dict[str, dict] = {}
        if hc.start_period > 0:
            start = self.seconds(hc.start_interval, (*path, "start_interval"))
            out["startupProbe"] = {"exec": {"command": command}, "periodSeconds": start, "timeoutSeconds": timeout,
                                   "failureThreshold": math.ceil(hc.start_period / start) + max(1, hc.retries)}
        if svc.x.restart_on_unhealthy:
            out["livenessProbe"] = dict(probe)
        out["readinessProbe"] = dict(probe)
        return dict(sorted(out.items()))

    def lifecycle(self, name: str, svc: Service) -> dict:
        out: dict[str, Any] = {}
        for key, k8s in (("post_start", "postStart"), ("pre_stop", "preStop")):
            hooks = getattr(svc, key)
            if hooks:
                out[k8s] = {"exec": {"command": self.hook_command(name, key, hooks)}}
        # An explicit SIGTERM too: without it the runtime sends the image's STOPSIGNAL, which may differ.
        if svc.stop_signal is not None:
            path = ("services", name, "stop_signal")
            sig = signal_name(svc.stop_signal)  # "SIGRTMIN+3": Kubernetes spells realtime signals so too
            if self.version >= STOP_SIGNAL_SINCE:
                out["stopSignal"] = sig
                self.warn(path, "lifecycle.stopSignal needs the ContainerStopSignals feature gate (alpha)")
            else:
                fix = ("SIGTERM unless the image sets another STOPSIGNAL" if svc.stop_signal == signal.SIGTERM
                       else "set STOPSIGNAL in the image")
                self.warn(path, f"{sig}: Kubernetes before 1.33 always sends the image's stop signal ({fix})")
        return out

    def hook_command(self, name: str, key: str, hooks: Iterable[Hook]) -> list[str]:
        hooks = list(hooks)
        for i, hook in enumerate(hooks):
            if hook.user or hook.privileged:
                self.warn(("services", name, key, i), "user and privileged: the hook runs as the container does")
        if len(hooks) == 1 and not hooks[0].working_dir and not hooks[0].environment:
            return list(hooks[0].command)
        steps = []
        for hook in hooks:
            step = shlex.join(hook.command)
            if hook.environment:
                step = "env " + " ".join(shlex.quote(f"{k}={v}") for k, v in hook.environment.items()) + " " + step
            if hook.working_dir:
                step = f"cd {shlex.quote(hook.working_dir)} && {step}"
            steps.append(f"({step})" if hook.working_dir else step)
        return ["/bin/sh", "-c", " && ".join(steps)]

    def container_security(self, name: str, svc: Service) -> dict:
        path = ("services", name)
        sc: dict[str, Any] = {}
        if svc.user:
            uid, _, gid = svc.user.partition(":")
            if _NUMERIC.fullmatch(uid) and (not gid or _NUMERIC.fullmatch(gid)):
                sc["runAsUser"] = int(uid)
                if gid:
                    sc["runAsGroup"] = int(gid)
            else:
                self.warn((*path, "user"), f'"{svc.user}": Kubernetes needs numeric ids (runAsUser/runAsGroup): '
                                           "the image's user applies")
        if svc.cap_add or svc.cap_drop:
            caps: dict[str, list[str]] = {}
            if svc.cap_add:
                caps["add"] = [c.removeprefix("CAP_") for c in svc.cap_add]
            if svc.cap_drop:
                caps["drop"] = [c.removeprefix("CAP_") for c in svc.cap_drop]
            sc["capabilities"] = caps
        if svc.privileged:
            sc["privileged"] = True
        if svc.read_only:
            sc["readOnlyRootFilesystem"] = True
        for i, opt in enumerate(svc.security_opt):
            key, _, value = opt.replace("=", ":", 1).partition(":")
            if key == "no-new-privileges":
                if value in ("", "true"):
                    if svc.privileged or any(c.removeprefix("CAP_") in ("SYS_ADMIN", "ALL") for c in svc.cap_add):
                        self.warn((*path, "security_opt", i), "Kubernetes refuses no-new-privileges beside "
                                                              "privileged or SYS_ADMIN: dropped")
                    else:
                        sc["allowPrivilegeEscalation"] = False
            elif key == "seccomp" and value == "unconfined":
                sc["seccompProfile"] = {"type": "Unconfined"}
            else:
                self.warn((*path, "security_opt", i), f'"{opt}": no Kubernetes equivalent: ignored')
        return sc

    # -- volumes, secrets, configs
    def mounts(self, name: str, svc: Service, volumes: dict[str, dict]) -> list[dict]:
        out: list[dict] = []
        for i, m in enumerate(svc.volumes):
            path = ("services", name, "volumes", i)
            volume = self.volume_for(name, i, m, path)
            if volume is None:
                continue
            volumes.setdefault(volume["name"], volume)
            mount: dict[str, Any] = {"name": volume["name"], "mountPath": m.target}
            if m.read_only:
                mount["readOnly"] = True
            if m.volume_subpath:
                mount["subPath"] = m.volume_subpath
            if m.bind_propagation:
                self.warn(path, f"bind propagation {m.bind_propagation}: not exported")
            out.append(mount)
        for kind in ("secrets", "configs"):
            for i, ref in enumerate(getattr(svc, kind)):
                out.append(self.file_mount(name, kind, i, ref, volumes))
        return out

    def volume_for(self, name: str, index: int, m: Mount, path: KeyPath) -> dict | None:
        own = dns_label(f"{self.names[name]}-{m.type}-{index}")
        if m.type == "tmpfs":
            empty: dict[str, Any] = {"medium": "Memory"}
            if m.tmpfs_size:
                empty["sizeLimit"] = quantity_bytes(m.tmpfs_size)
            if m.tmpfs_mode is not None or m.tmpfs_options:
                self.warn(path, "tmpfs mode and options: an emptyDir has the kubelet's")
            return {"name": own, "emptyDir": empty}
        if m.type == "bind":
            if not self.opts.allow_hostpath:
                self.refuse(path, f"bind mount of {m.source}: a path on this host, not on the cluster's nodes; "
                                  "use a named volume, or pass --allow-hostpath to export it as a hostPath volume")
                return None
            why = f"bind mount of {m.source} exported as hostPath: that path must exist on every node"
            if not (m.read_only or m.idmap) and _host_users_false(self.stack.services[name]):
                why += ("; the pod's user namespace (hostUsers: false) idmaps it, so the container's root "
                        "writes there as host root, which pysup does only with idmap")
            self.warn(path, why)
            # m.idmap has no field and needs none: with hostUsers: false the runtime idmaps every
            # volume, hostPath included; without, nothing is idmapped, as under pysup
            return {"name": own, "hostPath": {"path": m.source, "type": "DirectoryOrCreate"
                                              if m.bind_create_host_path else ""}}
        if m.source is None:  # anonymous volume: lives and dies with the container, like an emptyDir
            return {"name": own, "emptyDir": {}}
        vol = self.stack.volumes.get(m.source)
        self.used_volumes.add(m.source)
        self.volume_users.setdefault(m.source, set()).add(name)
        if m.volume_nocopy:
            self.warn(path, "nocopy: a new claim is always empty")
        claim = dns_label(vol.name if vol is not None and vol.external else m.source)
        return {"name": dns_label(f"vol-{m.source}"), "persistentVolumeClaim": {"claimName": claim}}

    def file_mount(self, name: str, kind: str, index: int, ref: FileRef, volumes: dict[str, dict]) -> dict:
        obj = getattr(self.stack, kind).get(ref.source)
        self.used_files[kind].add(ref.source)
        path = ("services", name, kind, index)
        key = self.data_key(ref.source)
        vol_name = dns_label(f"{kind[:-1]}-{ref.source}-{self.names[name]}-{index}")
        item: dict[str, Any] = {"key": key, "path": key}
        if ref.mode is not None:
            item["mode"] = ref.mode
        target = self.file_object_name(kind, obj) if obj is not None else dns_label(ref.source)
        if kind == "secrets":
            volumes[vol_name] = {"name": vol_name, "secret": {"secretName": target, "items": [item]}}
        else:
            volumes[vol_name] = {"name": vol_name, "configMap": {"name": target, "items": [item]}}
        if ref.uid or ref.gid:
            self.warn(path, "uid and gid: files of a volume belong to root (or the pod's fsGroup)")
        return {"name": vol_name, "mountPath": ref.target, "subPath": key, "readOnly": True}

    @staticmethod
    def data_key(key: str) -> str:
        return key if _DATA_KEY.fullmatch(key) else re.sub(r"[^-._a-zA-Z0-9]", "-", key)

    def file_object_name(self, kind: str, obj: FileObject) -> str:
        return dns_label(obj.name if obj.external else obj.key)

    def export_volumes(self) -> None:
        for key, vol in self.stack.volumes.items():
            path = ("volumes", key)
            if key not in self.used_volumes:
                continue
            if vol.external:
                self.warn(path, f'external: the PersistentVolumeClaim "{dns_label(vol.name)}" must exist')
                continue
            if vol.driver or vol.driver_opts:
                self.warn(path, "driver and driver_opts: the cluster's default storage class decides")
            users = sorted(self.volume_users.get(key, ()))
            shared = len(users) > 1 or any(self.stack.services[u].replicas > 1 for u in users)
            if shared:
                self.warn(path, "used by several pods (" + ", ".join(users) + "): claimed ReadWriteMany, "
                                "which needs a storage class that has it")
            labels = {k: v for k, v in vol.labels.items() if self.valid_label(k, v)}
            self.add(path, {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": self.meta(dns_label(key), labels),
                "spec": {"accessModes": ["ReadWriteMany" if shared else "ReadWriteOnce"],
                         "resources": {"requests": {"storage": self.opts.volume_size}}},
            })

    def export_files(self, kind: str) -> None:
        for key, obj in getattr(self.stack, kind).items():
            if key not in self.used_files[kind]:
                continue
            path = (kind, key)
            if obj.external:
                self.warn(path, f'external: the {"Secret" if kind == "secrets" else "ConfigMap"} '
                                f'"{self.file_object_name(kind, obj)}" must exist')
                continue
            if obj.file is not None:
                try:
                    with open(obj.file, "rb") as f:
                        data = f.read()
                except OSError as exc:
                    self.refuse(path, f"cannot read {obj.file}: {exc.strerror}")
                    continue
            else:
                data = (obj.content or "").encode()
            dkey = self.data_key(key)
            name = self.file_object_name(kind, obj)
            if kind == "secrets":
                self.warn(path, "written into the Secret manifest (base64, not encrypted): keep the output "
                                "private, or create the Secret another way")
                self.add(path, {"apiVersion": "v1", "kind": "Secret", "metadata": self.meta(name),
                                       "type": "Opaque", "data": {dkey: base64.b64encode(data).decode()}})
                continue
            try:
                body: dict[str, Any] = {"data": {dkey: data.decode()}}
            except UnicodeDecodeError:
                body = {"binaryData": {dkey: base64.b64encode(data).decode()}}
            self.add(path, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": self.meta(name), **body})

    # -- Services and NetworkPolicies
    def cluster_ports(self, name: str, svc: Service) -> list[dict]:
        ports: dict[tuple[int, str], dict] = {}
        for port in svc.ports:
            proto = port.protocol.upper()
            entry: dict[str, Any] = {"name": self.port_name(port.name, port.target, proto), "port": port.target,
                                     "protocol": proto, "targetPort": port.target}
            if port.app_protocol:
                entry["appProtocol"] = port.app_protocol
            ports.setdefault((port.target, proto), entry)
        for number, proto in self.expose_ports(name, svc):
            ports.setdefault((number, proto), {"name": self.port_name(None, number, proto), "port": number,
                                               "protocol": proto, "targetPort": number})
        names: set[str] = set()
        for key in sorted(ports):
            if ports[key]["name"] in names:
                ports[key]["name"] = self.port_name(None, *key)
            names.add(ports[key]["name"])
        return [ports[k] for k in sorted(ports)]

    def export_services(self, name: str, svc: Service) -> None:
        path = ("services", name)
        mode = svc.network_mode
        if name in self.init_only or mode == "none" or (mode or "").startswith("service:"):
            return
        ports = self.cluster_ports(name, svc)
        spec: dict[str, Any] = {"selector": self.selector(name)}
        if ports:
            spec["ports"] = ports
        else:  # headless, no ports: the name resolves to the ready pods, any port, as in compose
            spec["clusterIP"] = "None"
        main = {"apiVersion": "v1", "kind": "Service", "metadata": self.meta(self.names[name], self.selector(name)),
                "spec": spec}
        self.add(path, main)
        aliases: list[tuple[KeyPath, str]] = []
        for att in svc.networks:
            for key in ("ipv4_address", "ipv6_address", "interface_name"):
                if getattr(att, key):
                    self.warn((*path, "networks", att.network, key), "the cluster's network decides: ignored")
            for alias in att.aliases:
                aliases.append((("services", name, "networks", att.network, "aliases"), alias))
        for other_name, other in self.stack.services.items():
            for i, link in enumerate(other.links):
                target, _, alias = link.partition(":")
                if target == name and alias and alias != name:
                    aliases.append((("services", other_name, "links", i), alias))
        done = {self.names[name]}
        for apath, alias in aliases:
            k8s = dns_label(alias)
            if k8s in done:
                continue
            if k8s in self.names.values():
                self.warn(apath, f'alias "{alias}" is the name of another service: not exported')
                continue
            if k8s != alias:
                self.warn(apath, f'alias "{alias}" exported as the Service "{k8s}"')
            done.add(k8s)
            self.add(apath, {"apiVersion": "v1", "kind": "Service",
                                   "metadata": self.meta(k8s, self.selector(name)), "spec": dict(spec)})
        if any(att.aliases for att in svc.networks) and len({a.network for a in svc.networks}) > 1:
            self.warn((*path, "networks"), "aliases are visible from every network of the stack, not only their own")
        published = self.published_ports(name, svc)
        if published:
            self.add(path, {
                "apiVersion": "v1", "kind": "Service",
                "metadata": self.meta(dns_label(f"{self.names[name]}-published"), self.selector(name)),
                "spec": {"type": self.opts.publish, "selector": self.selector(name), "ports": published}})

    def published_ports(self, name: str, svc: Service) -> list[dict]:
        out: list[dict] = []
        seen: set[tuple[int, str]] = set()
        for i, port in enumerate(svc.ports):
            path = ("services", name, "ports", i)
            if port.mode == "host":
                self.warn(path, "mode host: published through the Service like ingress")
            if port.host_ip:
                self.warn(path, f"host_ip {port.host_ip}: a {self.opts.publish} Service listens on every address")
            if port.published is None:  # compose picks a free host port: here, the target port
                number = port.target
            else:
                low, high = port.published
                if low != high:
                    self.warn(path, f"port range {low}-{high}: one Service port ({low}) spreads over the replicas")
                number = low
            proto = port.protocol.upper()
            if (number, proto) in seen:
                continue
            seen.add((number, proto))
            entry: dict[str, Any] = {"name": self.port_name(port.name, number, proto), "port": number,
                                     "protocol": proto, "targetPort": port.target}
            if self.opts.publish == "NodePort":
                if 30000 <= number <= 32767:
                    entry["nodePort"] = number
                else:
                    self.warn(path, f"{number} is outside the NodePort range 30000-32767: Kubernetes picks the "
                                    "node port (kubectl get service shows it)")
            out.append(entry)
        names: set[str] = set()
        for entry in out:
            if entry["name"] in names:
                entry["name"] = self.port_name(None, entry["port"], entry["protocol"])
            names.add(entry["name"])
        return out

    def export_network_policies(self) -> None:
        members: dict[str, list[str]] = {}
        for name, svc in self.stack.services.items():
            if svc.network_mode is None and name not in self.init_only:
                for att in svc.networks:
                    members.setdefault(att.network, []).append(name)
        project = {PART_OF: label_value(self.stack.name)}
        for network in sorted(members):
            if network in self.stack.networks and self.stack.networks[network].external:
                continue
            selector = {"matchLabels": {**project, NETWORK_LABEL + label_value(network): "true"}}
            self.add(("networks", network), {
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": self.meta(dns_label(f"network-{network}")),
                "spec": {"podSelector": selector, "policyTypes": ["Ingress"],
                         "ingress": [{"from": [{"podSelector": selector}]}]},
            })
        for waiter, dep, port in sorted(self.wait_paths):
            a, b = self.stack.services[waiter], self.stack.services[dep]
            if b.network_mode is not None or (a.network_mode is None and
                                              {n.network for n in a.networks} & {n.network for n in b.networks}):
                continue
            # They share no network: without this, the NetworkPolicies would block the wait forever.
            self.warn(("services", waiter, "depends_on", dep), f"shares no network with {dep}: a NetworkPolicy "
                                                               f"lets its pods reach port {port} of {dep} to wait")
            self.add(("services", waiter, "depends_on", dep), {
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": self.meta(dns_label(f"{self.names[dep]}-from-{self.names[waiter]}")),
                "spec": {"podSelector": {"matchLabels": self.selector(dep)}, "policyTypes": ["Ingress"],
                         "ingress": [{"from": [{"podSelector": {"matchLabels": self.selector(waiter)}}],
                                      "ports": [{"port": port, "protocol": "TCP"}]}]},
            })
        for name, svc in self.stack.services.items():
            if svc.network_mode is not None or name in self.init_only:
                continue
            ports = sorted({(p.target, p.protocol.upper()) for p in svc.ports})
            if not ports:
                continue
            self.add(("services", name), {
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": self.meta(dns_label(f"{self.names[name]}-published")),
                "spec": {"podSelector": {"matchLabels": self.selector(name)}, "policyTypes": ["Ingress"],
                         "ingress": [{"ports": [{"port": n, "protocol": p} for n, p in ports]}]},
            })

    def service_warnings(self, name: str, svc: Service) -> None:
        path = ("services", name)
        if svc.restart.condition == "on-failure" and name not in self.init_only:
            self.warn((*path, "restart"), "on-failure: exported as a Job (restartPolicy OnFailure): it is done "
                                          "once it exits 0, and has no rolling update")


def _host_users_false(svc: Service) -> bool:
    """The service's pod gets `hostUsers: false`: a user namespace, which Kubernetes refuses beside
    the host's network, PID or IPC namespace."""
    return userns_wanted(svc) and "host" not in (svc.network_mode, svc.pid, svc.ipc)
