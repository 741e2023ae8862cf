from __future__ import annotations

import textwrap

import pytest

from supervisor.config.load import load
from supervisor.export import kubernetes


class Result:
    def __init__(self, exported: kubernetes.Exported):
        self.manifests = exported.manifests
        self.warnings = exported.warnings
        self.by = {(m["kind"], m["metadata"]["name"]): m for m in exported.manifests}

    def get(self, kind: str, name: str) -> dict:
        return self.by[(kind, name)]

    def pod(self, name: str, kind: str = "Deployment") -> dict:
        return self.get(kind, name)["spec"]["template"]["spec"]

    def container(self, name: str, kind: str = "Deployment") -> dict:
        return self.pod(name, kind)["containers"][0]

    def kinds(self, kind: str) -> list[str]:
        return [n for k, n in self.by if k == kind]

    def warned(self, path: str) -> list[str]:
        from supervisor.errors import format_path

        return [w.message for w in self.warnings if format_path(w.path) == path]


@pytest.fixture
def export(tmp_path):
    """export(yaml_text, **options) -> Result, from a compose file written in tmp_path."""

    def run(text: str, files: dict[str, bytes | str] | None = None, **options) -> Result:
        for name, content in (files or {}).items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        spec = tmp_path / "compose.yaml"
        spec.write_text(textwrap.dedent(text))
        stack = load([str(spec)], environ={}).stack
        return Result(kubernetes.export(stack, kubernetes.Options(**options)))

    return run
