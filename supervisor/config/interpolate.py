"""Compose variable interpolation (`${VAR:-default}` and friends) over a located spec tree.

This is a port of compose-go's `template/template.go`, quirks included, so a value means here what
it means to `docker compose`:

- `$$` is a literal `$`; `$VAR` and `${VAR}` look a variable up, an unset one becomes "" with a
  warning; `${VAR:-d}` / `${VAR-d}` default when unset-or-empty / unset; `${VAR:+a}` / `${VAR+a}`
  give `a` when set-and-non-empty / set; `${VAR:?msg}` / `${VAR?msg}` fail when unset-or-empty /
  unset. Names are `[_a-zA-Z][_a-zA-Z0-9]*`.
- The text after an operator is itself interpolated (`${A:-${B:-x}}`) and is interpolated first,
  even when it ends up unused: an error (or unset-variable warning) inside an unused default is
  still reported, as compose does.
- Where an expression ends is found the way compose finds it: the regular expression takes the
  operator's argument up to the last `}` on the line, then braces are counted to cut it back to
  the matching one; the remainder is interpolated in turn.
- A `$` not followed by `$`, a name or `{` is kept literally (`a $ b`, `^x$`, `$1`); a `${` that
  does not start a valid expression is an error (`${`, `${}`, `${ A}`, `${A`).
- `${name[key]}` (compose-go's "named mappings", off in compose) is kept literally.

Differences, on purpose: compose stops at the first bad value, pysup reports every one; and
`${...}` nesting deeper than MAX_NESTING is refused rather than exhausting the stack.

Only string values are interpolated, never keys, including in `x-` extension sections (compose
interpolates the whole document before looking at any key).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import KeyPath, Problem, SpecError
from .source import Map, Seq, locate

__all__ = ["InterpolationError", "interpolate", "interpolate_with_warnings", "interpolate_string"]


class InterpolationError(ValueError):
    """A value whose `$` expressions cannot be interpolated. `str()` is the message."""

    def __init__(self, message: str, variable: str | None = None):
        super().__init__(message)
        self.variable = variable  # set for a failed `${VAR:?msg}` / `${VAR?msg}`


_NAME = r"[_a-zA-Z][_a-zA-Z0-9]*"
# compose-go's pattern, group for group. `.` stops at a newline in both Go and Python.
_PATTERN = re.compile(
    r"\$(?:"
    r"(?P<escaped>\$)"
    r"|(?P<named>" + _NAME + r")"
    r"|\{(?:"
    r"(?P<braced>" + _NAME + r"(?::?[-+?](?:.*))?)\}"
    r"|(?P<mapping>" + _NAME + r"\[(?:.*)\](?::?[-+?}](?:.*))?)\}"
    r"|(?P<invalid>)"
    r"))"
)
_OPERATORS = (":?", "?", ":-", "-", ":+", "+")
# `${A:-${B:-...}}` depth. compose has no limit; one keeps a hostile value from exhausting the stack.
MAX_NESTING = 64

Lookup = Callable[[str], "str | None"]


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _closing_brace(text: str) -> int:
    """compose-go's getFirstBraceClosingIndex: each `{` opens (and skips the next character)."""
    depth = 0
    i = 0
    while i < len(text):
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        if text[i] == "{":
            depth += 1
            i += 1
        i += 1
    return -1


class _Substituter:
    """One interpolation run: a lookup, plus the unset variables it met (for warnings)."""

    def __init__(self, lookup: Lookup, whole: str):
        self.lookup = lookup
        self.whole = whole  # the value as written, for error messages
        self.unset: list[str] = []
        self.depth = 0

    def substitute(self, template: str) -> str:
        # compose-go interpolates the text left after an expression's closing brace as a string
        # of its own; that text ends where the line's last `}` is, so carrying on scanning right
        # after the brace matches the same expressions, without recursing once per expression.
        out: list[str] = []
        pos = 0
        while (m := _PATTERN.search(template, pos)) is not None:
            out.append(template[pos : m.start()])
            value, used = self.replace(m.group(0))
            out.append(value)
            pos = m.start() + used
        out.append(template[pos:])
        return "".join(out)

    def get(self, name: str) -> str:
        value = self.lookup(name)
        if value is None:
            self.unset.append(name)
            return ""
        return value

    def invalid(self) -> InterpolationError:
        return InterpolationError(
            f"invalid interpolation format {_quote(self.whole)} (write \"$$\" for a literal \"$\")"
        )

    def replace(self, matched: str) -> tuple[str, int]:
        """The value of one matched expression, and how much of `matched` it used."""
        close = _closing_brace(matched)
        substring = matched[: close + 1] if close > -1 else matched
        m = _PATTERN.match(substring)
        if m is None:  # compose-go panics here and reports the panic; either way it is refused
            raise self.invalid()
        if m.group("escaped"):
            value = "$"
        elif m.group("named"):
            value = self.get(m.group("named"))
        elif m.group("braced"):
            value = self.braced(m.group("braced"), matched, substring)
        elif m.group("mapping"):
            value = substring
        else:
            raise self.invalid()
        return value, len(substring)

    def braced(self, substitution: str, matched: str, substring: str) -> str:
        # compose picks the operator appearing first anywhere in the matched text.
        found = [(matched.find(op), op) for op in _OPERATORS if op in matched]
        if not found:
            return self.get(substitution)
        op = min(found)[1]
        if op not in substitution:
            return substring
        name, arg = substitution.split(op, 1)
        if self.depth >= MAX_NESTING:
            raise InterpolationError(
                f"invalid interpolation format {_quote(self.whole)}: "
                f"expressions nested more than {MAX_NESTING} deep"
            )
        self.depth += 1
        arg = self.substitute(arg)
        self.depth -= 1
        value = self.lookup(name)
        if op == ":-":
            return arg if not value else value
        if op == "-":
            return arg if value is None else value
        if op == ":+":
            return arg if value else ""
        if op == "+":
            return arg if value is not None else ""
        if value is None or (op == ":?" and value == ""):
            detail = f": {arg}" if arg else ""
            raise InterpolationError(f"required variable {_quote(name)} is missing a value{detail}", name)
        return value


def _lookup(environ: Mapping[str, str]) -> Lookup:
    return lambda name: environ.get(name)


def _interpolate_string(text: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    run = _Substituter(_lookup(environ), text)
    return run.substitute(text), run.unset


def interpolate_string(text: str, environ: Mapping[str, str]) -> str:
    """Interpolate one string. Raises InterpolationError; unset variables become "" silently."""
    return _interpolate_string(text, environ)[0]


def interpolate_with_warnings(tree: Map, environ: Mapping[str, str]) -> tuple[Map, list[Problem]]:
    """Interpolate every string value in `tree`, keeping locations and merge tags.

    Returns the new tree and one located warning per unset variable (at its first use).
    Raises SpecError with one located Problem per value that cannot be interpolated.
    """
    errors: list[Problem] = []
    warned: dict[str, Problem] = {}

    def walk(node: Any, path: KeyPath) -> Any:
        if isinstance(node, str):
            if "$" not in node:
                return node
            try:
                value, unset = _interpolate_string(node, environ)
            except InterpolationError as exc:
                errors.append(Problem(str(exc), path=path, location=locate(tree, path)))
                return node
            for name in unset:
                if name not in warned:
                    warned[name] = Problem(
                        f"variable {_quote(name)} is not set, defaulting to a blank string",
                        path=path,
                        location=locate(tree, path),
                    )
            return value
        if isinstance(node, Map):
            out = Map(loc=node.loc)
            for key, value in node.items():
                out.set(key, walk(value, (*path, key)), like=node)
            return out
        if isinstance(node, Seq):
            return Seq((walk(v, (*path, i)) for i, v in enumerate(node)), loc=node.loc, item_locs=node.item_locs)
        if isinstance(node, dict):
            return {key: walk(value, (*path, key)) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(v, (*path, i)) for i, v in enumerate(node)]
        return node

    result = walk(tree, ())
    if errors:
        raise SpecError(errors)
    return result, list(warned.values())


def interpolate(tree: Map, environ: Mapping[str, str]) -> Map:
    """Interpolate every string value in `tree`; unset variables become "" (warnings dropped)."""
    return interpolate_with_warnings(tree, environ)[0]
