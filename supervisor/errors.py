"""The errors pysup raises on purpose. Each one carries what a person needs to act on it.

The CLI turns any `PysupError` into one message per line and exit status 1; anything else is a bug
and gets a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

PathPart = str | int
KeyPath = tuple[PathPart, ...]


def format_path(path: Sequence[PathPart]) -> str:
    """`("services", "web", "ports", 1)` -> `services.web.ports[1]` (compose's own notation)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = str(part)
    return out


@attrs.frozen
class Location:
    """A place in a spec file, 1-based like editors and compilers show it."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@attrs.frozen
class Problem:
    """One thing wrong with a spec: where it is, which key, and what is wrong."""

    message: str
    path: KeyPath = ()
    location: Location | None = None
    file: str | None = None  # when there is a file but no position in it (missing, unreadable)

    def __str__(self) -> str:
        where = str(self.location) if self.location else (self.file or "")
        key = format_path(self.path)
        return ": ".join(p for p in (where, key, self.message) if p)


class PysupError(Exception):
    """An error pysup reports to a person: one-line message, exit status 1, no traceback."""

    exit_code = 1


class SpecError(PysupError):
    """The spec files do not load: one or more problems, each located."""

    def __init__(self, problems: Iterable[Problem] | Problem | str):
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))
