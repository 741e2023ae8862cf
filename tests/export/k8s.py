"""Checks that exported manifests would be accepted by a real API server, offline.

1. `schema_errors`: every object against the Kubernetes OpenAPI schemas of the target version, in
   strict mode (no unknown field anywhere), with the JSON schemas the `kubernetes-validate` package
   ships for each minor version (generated from the API server's own OpenAPI documents).
2. `consistency_errors`: what the schemas cannot say but the API server's validation or a working
   stack needs: names are DNS labels, a selector matches its pod template, every volume mount names
   a pod volume, every claim, Secret and ConfigMap a pod uses is exported (or declared external),
   port names are short and unique, every Service selects some workload's pods.
"""

from __future__ import annotations

import re

import kubernetes_validate

DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
PORT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?")


def schema_errors(manifests, version: str) -> list[str]:
    errors = []
    for m in manifests:
        try:
            kubernetes_validate.validate(m, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            errors.append(f'{m["kind"]}/{m["metadata"]["name"]} ({version}): {where}: {exc.message}')
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(exc.message)
    return errors


def _pod_specs(manifests):
    for m in manifests:
        if m["kind"] in ("Deployment", "Job"):
            yield m, m["spec"]["template"]


def consistency_errors(manifests, external: set[tuple[str, str]] = frozenset()) -> list[str]:
    errors: list[str] = []
    names = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    if len(names) != len(manifests):
        errors.append("two objects of one kind share a name")
    for kind, name in names:
        if not DNS_LABEL.fullmatch(name):
            errors.append(f"{kind}/{name}: not a DNS label")
    pod_labels = []
    for m, template in _pod_specs(manifests):
        who = f'{m["kind"]}/{m["metadata"]["name"]}'
        labels = template["metadata"]["labels"]
        pod_labels.append(labels)
        if m["kind"] == "Deployment":
            for k, v in m["spec"]["selector"]["matchLabels"].items():
                if labels.get(k) != v:
                    errors.append(f"{who}: selector {k}={v} does not match the pod template")
            if template["spec"].get("restartPolicy", "Always") != "Always":
                errors.append(f"{who}: a Deployment's pods must restart Always")
        spec = template["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", ())}
        containers = spec.get("initContainers", []) + spec["containers"]
        cnames = [c["name"] for c in containers]
        if len(set(cnames)) != len(cnames):
            errors.append(f"{who}: container names repeat: {cnames}")
        for c in containers:
            if not DNS_LABEL.fullmatch(c["name"]):
                errors.append(f'{who}: container name {c["name"]} is not a DNS label')
            for mount in c.get("volumeMounts", ()):
                if mount["name"] not in volumes:
                    errors.append(f'{who}: mount of unknown volume {mount["name"]}')
            paths = [m["mountPath"] for m in c.get("volumeMounts", ())]
            if len(set(paths)) != len(paths):
                errors.append(f'{who}: container {c["name"]} mounts one path twice: {paths}')
            for e in c.get("env", ()):
                if not re.fullmatch(r"[-._a-zA-Z][-._a-zA-Z0-9]*", e["name"]):
                    errors.append(f'{who}: env name {e["name"]!r}')
            pnames = [p["name"] for p in c.get("ports", ()) if "name" in p]
            if len(set(pnames)) != len(pnames) or not all(PORT_NAME.fullmatch(n) for n in pnames):
                errors.append(f"{who}: bad container port names {pnames}")
        for c in spec.get("initContainers", ()):
            for key in ("livenessProbe", "readinessProbe", "startupProbe", "lifecycle"):
                if key in c:
                    errors.append(f'{who}: init container {c["name"]} has {key}')
        for v in volumes.values():
            refs = [("PersistentVolumeClaim", v.get("persistentVolumeClaim", {}).get("claimName")),
                    ("Secret", v.get("secret", {}).get("secretName")),
                    ("ConfigMap", v.get("configMap", {}).get("name"))]
            for kind, name in refs:
                if name and (kind, name) not in names and (kind, name) not in external:
                    errors.append(f"{who}: uses {kind}/{name}, which is not exported")
        if any("stopSignal" in c.get("lifecycle", {}) for c in spec["containers"]) and "os" not in spec:
            errors.append(f"{who}: stopSignal without spec.os.name")
        sc = [c.get("securityContext", {}) for c in containers]
        for s in sc:
            if s.get("allowPrivilegeEscalation") is False and (
                    s.get("privileged") or "SYS_ADMIN" in s.get("capabilities", {}).get("add", ())):
                errors.append(f"{who}: allowPrivilegeEscalation false beside privileged or SYS_ADMIN")
        if spec.get("shareProcessNamespace") and spec.get("hostPID"):
            errors.append(f"{who}: shareProcessNamespace with hostPID")
        for s in spec.get("securityContext", {}).get("sysctls", ()):
            if spec.get("hostNetwork") and s["name"].startswith("net."):
                errors.append(f'{who}: sysctl {s["name"]} with hostNetwork')
        if spec.get("hostUsers") is False and any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")):
            errors.append(f"{who}: hostUsers false with host namespaces")
    for m in manifests:
        if m["kind"] == "Service":
            who = f'Service/{m["metadata"]["name"]}'
            selector = m["spec"]["selector"]
            if not any(all(labels.get(k) == v for k, v in selector.items()) for labels in pod_labels):
                errors.append(f"{who}: selects no exported pods")
            ports = m["spec"].get("ports", ())
            pnames = [p.get("name") for p in ports]
            if len(ports) > 1 and (None in pnames or len(set(pnames)) != len(pnames)):
                errors.append(f"{who}: port names missing or repeated: {pnames}")
            if not all(PORT_NAME.fullmatch(n) for n in pnames if n):
                errors.append(f"{who}: bad port names {pnames}")
            if not ports and m["spec"].get("clusterIP") != "None":
                errors.append(f"{who}: no ports and not headless")
    return errors
