"""Where pysup keeps things on the host. One place, so every subsystem agrees.

- the state root (`PYSUP_STATE_DIR`, default /var/lib/pysup): what outlives a run — the image
  store (`images/`), named volumes (`volumes/<name>`), and per project (`projects/<project>/`)
  the kept container logs and the record of what a run made, read to clean up after a crash;
- the runtime root (`PYSUP_RUNTIME_DIR`, default /run/pysup): what lives only while pysup runs —
  per project (`<project>/`) the lock of the running `pysup up` and its control socket; per
  container (`containers/<id>/`) the runtime's files; the seccomp filter cache (`seccomp/`).

Everything takes the environment as a parameter (default os.environ) so tests point it at a
temporary directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

DEFAULT_STATE_ROOT = "/var/lib/pysup"
DEFAULT_RUNTIME_ROOT = "/run/pysup"


def state_root(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return os.path.abspath(env.get("PYSUP_STATE_DIR") or DEFAULT_STATE_ROOT)


def runtime_root(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return os.path.abspath(env.get("PYSUP_RUNTIME_DIR") or DEFAULT_RUNTIME_ROOT)


def images_dir(environ: Mapping[str, str] | None = None) -> str:
    return os.path.join(state_root(environ), "images")


def volumes_dir(environ: Mapping[str, str] | None = None) -> str:
    return os.path.join(state_root(environ), "volumes")


def project_state_dir(project: str, environ: Mapping[str, str] | None = None) -> str:
    return os.path.join(state_root(environ), "projects", project)


def project_runtime_dir(project: str, environ: Mapping[str, str] | None = None) -> str:
    return os.path.join(runtime_root(environ), project)


def containers_dir(environ: Mapping[str, str] | None = None) -> str:
    return os.path.join(runtime_root(environ), "containers")


def seccomp_cache_dir(environ: Mapping[str, str] | None = None) -> str:
    return os.path.join(runtime_root(environ), "seccomp")
