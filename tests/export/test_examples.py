"""Every example stack exports, and every manifest it gives is valid Kubernetes, offline.

Validation: the Kubernetes OpenAPI schemas (strict: no unknown field) of three minor versions, as
shipped by the `kubernetes-validate` package, plus the consistency checks of `k8s.py`; where
`kubectl` is installed, `kubectl kustomize` builds the written directory too. The output is
byte-identical between runs, in-process and across interpreter processes (hash seeds differ).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.config.load import Loaded, load
from supervisor.export import kubernetes, writer

from .k8s import consistency_errors, schema_errors

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "compose"
GOLDEN = Path(__file__).parent / "golden"
TARGETS = sorted(EXAMPLES.glob("*.yaml")) + [EXAMPLES / "extends" / "base" / "common.yaml",
                                               EXAMPLES / "extends", EXAMPLES / "multi"]
VERSIONS = ("1.29", "1.33", "1.37")
# Examples that are refused without --allow-hostpath, with the refusal they give.
NEEDS_HOSTPATH = {
    "webapp.yaml": ["services.api.volumes[1]: bind mount of {examples}/configs: a path on this host, not on "
                    "the cluster's nodes; use a named volume, or pass --allow-hostpath to export it as a "
                    "hostPath volume"],
    "xpysup.yaml": ["services.minimal.volumes[0]: bind mount of {examples}/data: a path on this host, not on "
                    "the cluster's nodes; use a named volume, or pass --allow-hostpath to export it as a "
                    "hostPath volume"],
}


def _rel(path: Path) -> str:
    return str(path.relative_to(EXAMPLES))


def _load(target: Path) -> Loaded:
    if target.is_dir():
        return load(None, cwd=str(target), environ={})
    return load([str(target)], environ={})


def _external(stack) -> set[tuple[str, str]]:
    out = {("PersistentVolumeClaim", kubernetes.dns_label(v.name)) for v in stack.volumes.values() if v.external}
    out |= {("Secret", kubernetes.dns_label(s.name)) for s in stack.secrets.values() if s.external}
    out |= {("ConfigMap", kubernetes.dns_label(c.name)) for c in stack.configs.values() if c.external}
    return out


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("target", TARGETS, ids=_rel)
def test_every_example_exports_to_valid_manifests(target: Path, version: str) -> None:
    stack = _load(target).stack
    options = kubernetes.Options(kube_version=version, allow_hostpath=_rel(target) in NEEDS_HOSTPATH)
    exported = kubernetes.export(stack, options)
    assert exported.manifests
    assert schema_errors(exported.manifests, version) == []
    assert consistency_errors(exported.manifests, _external(stack)) == []
    # Every service is a workload, or runs as an init container of one (and says so).
    workloads = {m["metadata"]["name"] for m in exported.manifests if m["kind"] in ("Deployment", "Job")}
    for name in stack.services:
        assert kubernetes.dns_label(name, prefix="svc") in workloads or any(
            w.path == ("services", name) and "init container" in w.message for w in exported.warnings)


@pytest.mark.parametrize("target", TARGETS, ids=_rel)
def test_refusals_are_exactly_the_documented_ones(target: Path) -> None:
    stack = _load(target).stack
    expected = NEEDS_HOSTPATH.get(_rel(target))
    if expected is None:
        kubernetes.export(stack)
        return
    with pytest.raises(kubernetes.ExportError) as info:
        kubernetes.export(stack)
    assert [str(p) for p in info.value.problems] == [e.format(examples=EXAMPLES) for e in expected]


@pytest.mark.parametrize("target", TARGETS, ids=_rel)
def test_every_service_warning_names_a_key(target: Path) -> None:
    stack = _load(target).stack
    exported = kubernetes.export(stack, kubernetes.Options(allow_hostpath=True))
    for w in exported.warnings:
        assert w.path and w.path[0] in ("services", "volumes", "secrets", "configs", "networks", "x-pysup"), w
        if w.path[0] == "services":
            assert w.path[1] in stack.services


def test_export_is_deterministic_in_process_and_across_processes(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from supervisor.config.load import load\n"
        "from supervisor.export import kubernetes, writer\n"
        "s = load([sys.argv[1]], environ={}).stack\n"
        "e = kubernetes.export(s, kubernetes.Options(allow_hostpath=True, namespace='ns'))\n"
        "sys.stdout.write(writer.render_stream(e.manifests))\n"
    )
    for target in (EXAMPLES / "webapp.yaml", EXAMPLES / "hooks.yaml", EXAMPLES / "isolation.yaml"):
        outs = {
            subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True, check=True,
                           cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2", "random")
        }
        assert len(outs) == 1, target
        stack = _load(target).stack
        options = kubernetes.Options(allow_hostpath=True)
        a = writer.render_files(kubernetes.export(stack, options).manifests)
        b = writer.render_files(kubernetes.export(_load(target).stack, options).manifests)
        assert a == b


@pytest.mark.parametrize("name", ["demo.yaml", "hooks.yaml", "restart.yaml"])
def test_golden_output(name: str) -> None:
    """The whole export of a few examples, byte for byte (PYSUP_UPDATE_GOLDEN=1 rewrites them)."""
    stack = _load(EXAMPLES / name).stack
    out = writer.render_stream(kubernetes.export(stack, kubernetes.Options(namespace="demo")).manifests)
    golden = GOLDEN / name
    if os.environ.get("PYSUP_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(out)
    assert out == golden.read_text()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("target", TARGETS, ids=_rel)
def test_kustomize_builds_the_written_directory(target: Path, tmp_path: Path) -> None:
    stack = _load(target).stack
    exported = kubernetes.export(stack, kubernetes.Options(allow_hostpath=True, namespace="apps"))
    writer.write_directory(str(tmp_path), writer.render_files(exported.manifests, namespace="apps"))
    r = subprocess.run(["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    import yaml

    built = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert len(built) == len(exported.manifests)
    assert all(d["metadata"].get("namespace") == "apps" for d in built)
