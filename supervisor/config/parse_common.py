"""Shared pieces of `config.parse`: located failures, the parse context, and value coercions.

Values reach the parser after interpolation, which only ever produces strings, so every typed
field accepts both the YAML type and a string spelling of it (`read_only: "${RO:-false}"`), as
compose-go does. Each coercion raises `Invalid` with the key path of the bad value; the field
parsers never build a `Problem` themselves.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from ..errors import KeyPath, Problem
from . import units
from .model import Backoff
from .source import Map, problem_at

T = TypeVar("T")


class Invalid(Exception):
    """One problem at `path` that stops parsing the value there."""

    def __init__(self, path: KeyPath, message: str, *, key: bool = False):
        super().__init__(message)
        self.path = tuple(path)
        self.message = message
        self.key = key  # point at the key rather than its value


@attrs.define
class Ctx:
    """What every field parser needs: the whole tree (for locations), the project directory, the
    interpolation environment, and the problems found so far."""

    tree: Map
    project_dir: str
    environ: Mapping[str, str]
    problems: list[Problem] = attrs.Factory(list)
    read_files: list[str] = attrs.Factory(list)  # env files looked at, for Stack.sources
    backoff: Backoff = attrs.Factory(Backoff)  # the stack's, which a service's x-pysup.backoff refines

    def report(self, exc: Invalid) -> None:
        self.problems.append(problem_at(self.tree, exc.path, exc.message, key=exc.key))

    def attempt(self, fn: Callable[..., T], *args: Any, default: T) -> T:
        """`fn(*args)`, or `default` once its problem is recorded: one bad value must not hide the
        others, so every independent piece is parsed under its own `attempt`."""
        try:
            return fn(*args)
        except Invalid as exc:
            self.report(exc)
            return default

    def path(self, value: str) -> str:
        """A host path as written in the spec, made absolute: `~` is the environment's HOME,
        relative paths are under the project directory."""
        if value == "~" or value.startswith("~/"):
            home = self.environ.get("HOME") or os.path.expanduser("~")
            value = home + value[1:]
        return os.path.normpath(os.path.join(self.project_dir, value))


def q(value: Any) -> str:
    """A value quoted for a message: double quotes, escapes for control characters."""
    return json.dumps(value if isinstance(value, str) else scalar_text(value), ensure_ascii=False)


def scalar_text(value: Any) -> str:
    """A scalar as compose stringifies it (Go's `fmt.Sprint`): `true`, `8080`, `1.5`, `1e+21`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if value is None:
        return ""
    return str(value)


def _go_float(value: float) -> str:
    """Go's `%v` for a float64: shortest digits, exponent form only below 1e-4 or from 1e21."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    from decimal import Decimal  # here: a float scalar is rare, and decimal is ~0.5 MB of a long-running pysup up

    dec = Decimal(repr(value))
    exp = dec.adjusted()
    if -4 <= exp < 21:
        text = format(dec, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    sign, digits, _ = dec.normalize().as_tuple()
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"


# --- shapes ---------------------------------------------------------------------------------------


def as_map(value: Any, path: KeyPath) -> Map:
    if value is None:
        return Map()
    if not isinstance(value, dict):
        raise Invalid(path, "expected a mapping")
    return value if isinstance(value, Map) else Map(value)


def as_list(value: Any, path: KeyPath) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Invalid(path, "expected a list")
    return value


def as_str(value: Any, path: KeyPath) -> str:
    if isinstance(value, (dict, list)) or value is None:
        raise Invalid(path, "expected a string")
    return scalar_text(value)


def opt_str(spec: Mapping[str, Any], key: str, path: KeyPath) -> str | None:
    """`spec[key]` as a string, None when absent or null."""
    value = spec.get(key)
    return None if value is None else as_str(value, (*path, key))


def str_list(value: Any, path: KeyPath) -> tuple[str, ...]:
    """A string or a list of strings (compose's `string_or_list`)."""
    if value is None:
        return ()
    if isinstance(value, list):
        return tuple(as_str(v, (*path, i)) for i, v in enumerate(value))
    return (as_str(value, path),)


def pairs(value: Any, path: KeyPath, *, sep: str = "=") -> list[tuple[str, str | None, KeyPath]]:
    """compose's `list_or_dict`: a mapping, or a list of `KEY=VALUE` / `KEY` strings.

    Gives (key, value, path) with scalars stringified and None where no value was given, so
    callers decide what a missing value means (an environment lookup, an empty label)."""
    out: list[tuple[str, str | None, KeyPath]] = []
    if isinstance(value, dict):
        for key, raw in value.items():
            if isinstance(raw, (dict, list)):
                raise Invalid((*path, key), "expected a string, number or boolean")
            out.append((str(key), None if raw is None else scalar_text(raw), (*path, key)))
        return out
    for i, item in enumerate(as_list(value, path)):
        text = as_str(item, (*path, i))
        key, found, val = text.partition(sep)
        if not key:
            raise Invalid((*path, i), f"invalid entry {q(text)}: empty name")
        out.append((key, val if found else None, (*path, i)))
    return out


# --- scalars --------------------------------------------------------------------------------------

_TRUE = {"true", "yes", "y", "on"}
_FALSE = {"false", "no", "n", "off"}


def as_bool(value: Any, path: KeyPath) -> bool:
    """A boolean, or compose-go's string spellings of one (what interpolation leaves)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise Invalid(path, f"invalid boolean {q(value)}")


def opt_bool(spec: Mapping[str, Any], key: str, path: KeyPath, default: bool) -> bool:
    value = spec.get(key)
    return default if value is None else as_bool(value, (*path, key))


def as_int(value: Any, path: KeyPath, *, minimum: int | None = None, what: str = "integer") -> int:
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.lstrip("+-").isdigit() and text.isascii():
            number = int(text)
    if number is None:
        raise Invalid(path, f"invalid {what} {q(value)}")
    if minimum is not None and number < minimum:
        raise Invalid(path, f"invalid {what} {q(value)}: must be at least {minimum}")
    return number


def opt_int(spec: Mapping[str, Any], key: str, path: KeyPath, **kw: Any) -> int | None:
    value = spec.get(key)
    return None if value is None else as_int(value, (*path, key), **kw)


def as_float(value: Any, path: KeyPath, *, what: str = "number") -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise Invalid(path, f"invalid {what} {q(value)}") from None
    else:
        raise Invalid(path, f"invalid {what} {q(value)}")
    if not math.isfinite(number):
        raise Invalid(path, f"invalid {what} {q(value)}")
    return number


def as_octal(value: Any, path: KeyPath, *, what: str = "mode") -> int:
    """A file mode: a YAML number is taken as is (`0o755`), a string is read as octal ("0755")."""
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str):
        text = value.strip()
        text = text[2:] if text[:2] in ("0o", "0O") else text
        try:
            mode = int(text, 8)
        except ValueError:
            raise Invalid(path, f"invalid {what} {q(value)}: expected an octal number like \"0755\"") from None
    else:
        raise Invalid(path, f"invalid {what} {q(value)}")
    if not 0 <= mode <= 0o7777:
        raise Invalid(path, f"invalid {what} {q(value)}: must be between 0 and 07777")
    return mode


def one_of(value: Any, path: KeyPath, choices: Sequence[str], what: str) -> str:
    text = as_str(value, path)
    if text not in choices:
        raise Invalid(path, f"invalid {what} {q(text)} (use {', '.join(choices)})")
    return text


# --- units (units.UnitError turned into a located Invalid) ----------------------------------------


def _unit(fn: Callable[[Any], T], value: Any, path: KeyPath) -> T:
    try:
        return fn(value)
    except units.UnitError as exc:
        raise Invalid(path, str(exc)) from None


def duration(value: Any, path: KeyPath) -> float:
    return _unit(units.parse_duration, value, path)


def seconds(value: Any, path: KeyPath) -> float:
    """An `x-pysup` duration: compose's string form or a number of seconds."""
    return _unit(units.parse_seconds, value, path)


def opt_duration(spec: Mapping[str, Any], key: str, path: KeyPath) -> float | None:
    value = spec.get(key)
    return None if value is None else duration(value, (*path, key))


def size(value: Any, path: KeyPath) -> int:
    return _unit(units.parse_bytes, value, path)


def cpus(value: Any, path: KeyPath) -> float:
    return _unit(units.parse_cpus, value, path)


def signal_number(value: Any, path: KeyPath) -> int:
    return _unit(units.parse_signal, value, path)
