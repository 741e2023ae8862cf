"""The one way from compose files to a `Stack`.

Stages, each a plain function in its own module, in the order Docker Compose applies them:

1. find the files (`-f`, `COMPOSE_FILE`, or compose.yaml & co. in this directory or a parent);
2. the interpolation environment: the project's `.env` (or `--env-file`), the shell winning;
3. per file: read YAML (source) -> interpolate -> schema-validate -> include -> extends;
4. merge the files in order (merge), drop what `!reset` emptied;
5. pysup's `x-pysup` keys, the semantic checks (checks), warnings for keys pysup ignores;
6. build the frozen model (parse).

Every problem is a located `Problem`; a stage that finds any raises `SpecError` with all of them.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping, Sequence

import attrs

from ..errors import Problem, SpecError
from . import checks, envfile, interpolate, merge, parse, schema, source
from .model import Stack
from .source import Map

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
_NAME_BAD = re.compile(r"[^a-z0-9_-]")


@attrs.frozen
class Loaded:
    stack: Stack
    warnings: tuple[Problem, ...]
    tree: Map | None = None  # the merged, located tree the stack was built from

    def locate(self, problems: Sequence[Problem]) -> tuple[Problem, ...]:
        """`problems` found later on the stack (by key path), given the file, line and column the
        path has in the spec files, like the loader's own."""
        return locate_in(self.tree, problems)


def locate_in(tree: Map | None, problems: Sequence[Problem]) -> tuple[Problem, ...]:
    """`problems` (by key path) with the file, line and column their paths have in `tree`."""
    if tree is None:
        return tuple(problems)
    return tuple(p if p.location or p.file or not p.path
                 else Problem(p.message, path=p.path, location=source.locate(tree, p.path))
                 for p in problems)


def find_default_files(cwd: str, warnings: list[Problem] | None = None) -> list[str]:
    """compose.yaml (or its older names) in `cwd` or the nearest parent, plus its override file.
    Several names in one directory: the first wins, with a warning, as in compose."""
    directory = os.path.abspath(cwd)
    while True:
        found = [n for n in DEFAULT_FILES if os.path.isfile(os.path.join(directory, n))]
        if found:
            if len(found) > 1 and warnings is not None:
                warnings.append(Problem(
                    f"found several compose files ({', '.join(found)}); using {found[0]}",
                    file=_display(os.path.join(directory, found[0]))))
            main = found[0]
            stem, ext = os.path.splitext(main)
            files = [os.path.join(directory, main)]
            override = os.path.join(directory, f"{stem}.override{ext}")
            if os.path.isfile(override):
                files.append(override)
            return files
        parent = os.path.dirname(directory)
        if parent == directory:
            raise SpecError(Problem(
                f"no compose file found in {os.path.abspath(cwd)} or its parents "
                f"(looked for {', '.join(DEFAULT_FILES)}); name one with -f"))
        directory = parent


def normalize_project_name(name: str) -> str:
    """Compose's rule: lower case, only [a-z0-9_-], starting with a letter or digit."""
    return _NAME_BAD.sub("", name.lower()).lstrip("_-")


def load(
    files: Sequence[str] | None = None,
    *,
    project_name: str | None = None,
    project_dir: str | None = None,
    env_files: Sequence[str] | None = None,
    profiles: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> Loaded:
    """Load a stack as `docker compose` would from the same arguments and environment."""
    warnings: list[Problem] = []
    try:
        return _load(files, project_name, project_dir, env_files, profiles, environ, cwd, warnings)
    except SpecError as exc:
        exc.warnings = tuple(warnings)
        raise


def _load(files, project_name, project_dir, env_files, profiles, environ, cwd, warnings: list[Problem]) -> Loaded:
    shell = dict(os.environ if environ is None else environ)
    cwd = os.path.abspath(cwd or os.getcwd())

    if not files and shell.get("COMPOSE_FILE"):
        files = [f for f in shell["COMPOSE_FILE"].split(shell.get("COMPOSE_PATH_SEPARATOR", os.pathsep)) if f]
    if files:
        paths = [f if f == "-" else os.path.abspath(os.path.join(cwd, f)) for f in files]
    else:  # compose looks in --project-directory when given, else here and upwards
        paths = find_default_files(os.path.join(cwd, project_dir) if project_dir else cwd, warnings)
    project_dir = os.path.abspath(os.path.join(cwd, project_dir)) if project_dir else os.path.dirname(paths[0])

    env = project_environment(project_dir, env_files, shell, cwd)
    loader = _TreeLoader(env, shell, warnings)
    tree = loader.load_files(paths, project_dir)

    name = project_name or env.get("COMPOSE_PROJECT_NAME") or tree.get("name") or os.path.basename(project_dir)
    if not isinstance(name, str) or not normalize_project_name(name):
        raise SpecError(source.problem_at(tree, ("name",), f'invalid project name "{name}"'))
    if project_name or env.get("COMPOSE_PROJECT_NAME") or "name" in tree:
        if normalize_project_name(name) != name:
            raise SpecError(source.problem_at(
                tree, ("name",),
                f'invalid project name "{name}": use lower case letters, digits, "_" and "-", '
                "starting with a letter or digit"))
    name = normalize_project_name(name)

    if profiles is None:
        profiles = env.get("COMPOSE_PROFILES", "").split(",")
    profiles = [p.strip() for p in profiles if p.strip()]
    active = checks.active_services(tree, profiles)

    problems = checks.xpysup_problems(tree) + checks.semantic_problems(tree, profiles=profiles)
    if problems:
        raise SpecError(problems)
    warnings += checks.unsupported_key_warnings(tree)

    stack = parse.build_stack(
        tree, name=name, project_dir=project_dir, files=paths, environ=env,
        sources=loader.sources, active=active, locate=functools.partial(locate_in, tree),
    )
    return Loaded(stack=stack, warnings=tuple(warnings), tree=tree)


def project_environment(
    project_dir: str, env_files: Sequence[str] | None, shell: Mapping[str, str], cwd: str
) -> dict[str, str]:
    """The interpolation environment: `.env` (or the `--env-file`s, in order), the shell winning."""
    if env_files:
        chosen = [os.path.abspath(os.path.join(cwd, f)) for f in env_files]
        required = True
    else:
        chosen = [os.path.join(project_dir, ".env")]
        required = False
    values: dict[str, str] = {}
    for path in chosen:
        if not required and not os.path.isfile(path):
            continue
        values.update(envfile.parse_env_file(path, lambda k: shell.get(k, values.get(k))))
    values.update(shell)
    return values


class _TreeLoader:
    """Reads, interpolates, validates and merges files; remembers every file it read."""

    def __init__(self, env: Mapping[str, str], shell: Mapping[str, str], warnings: list[Problem]):
        self.env = env
        self.shell = shell
        self.warnings = warnings
        self.sources: list[str] = []

    def load_files(self, paths: Sequence[str], project_dir: str, env: Mapping[str, str] | None = None) -> Map:
        """Relative `include` and `extends.file` paths of every file, override files in other
        directories too, resolve from the project directory, as in compose."""
        return merge.merge_all([self.load_file(p, project_dir, env) for p in paths])

    def read(self, path: str, env: Mapping[str, str] | None = None) -> Map:
        """One file, read and interpolated (the callback `extends` uses for other files)."""
        if path == "-":
            import sys

            tree = source.parse_yaml(sys.stdin.read(), "<stdin>")
        else:
            tree = source.read_yaml(path, _display(path))
            if path not in self.sources:
                self.sources.append(path)
        tree, unset = interpolate.interpolate_with_warnings(tree, self.env if env is None else env)
        self.warnings.extend(unset)
        problems = schema.validate(tree)
        if problems:
            raise SpecError(problems)
        return tree

    def load_file(self, path: str, project_dir: str, env: Mapping[str, str] | None = None) -> Map:
        # merge.resolve_include refuses include cycles itself.
        tree = self.read(path, env)
        tree = merge.resolve_include(tree, file=path, load_project=self.load_included, base_dir=project_dir)
        return merge.resolve_extends(tree, file=path, load=lambda p: self.read(p, env), base_dir=project_dir)

    def load_included(self, paths: list[str], project_directory: str | None, env_files: list[str] | None) -> Map:
        """An `include`d project: its own `.env` (or the include's env_file) under the shell's."""
        base = project_directory or os.path.dirname(paths[0])
        env = dict(self.env)
        for path in [os.path.join(base, ".env")] if env_files is None else env_files:
            if env_files is not None or os.path.isfile(path):
                self.sources.append(path)
                env.update(envfile.parse_env_file(path, env.get))
        env.update(self.shell)
        return self.load_files(paths, base, env)


def _display(path: str) -> str:
    """Paths in messages: relative to the working directory when under it, as people typed them."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel
