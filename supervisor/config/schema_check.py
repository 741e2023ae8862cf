"""A fast, pure-Python "is this tree valid?" for the shipped JSON schemas.

`schema.schema_problems` asks this first; only a tree it does not pass is validated again by
jsonschema, whose errors the located messages are made from. So this check must never pass a tree
jsonschema would reject; rejecting a tree jsonschema accepts only costs time (the slow path then
finds no error). It is built for that:
- the keywords the shipped schemas use are compiled into closures with jsonschema's own semantics
  (its type checker, `equal`/`uniq`, `re.search` for patterns, `find_additional_properties`);
- any other keyword (or a `$ref` left after `schema.flatten`) compiles to "not valid".

It replaces jsonschema-rs, which answered in ~1 ms but kept ~11 MB resident in `pysup up` (a 15 MB
shared object and the validator's global state) for as long as it runs; this takes ~10 ms for a
200-service file and a few hundred KB. tests/config/test_schema.py checks it against jsonschema.
fastjsonschema, the library made for compiling schemas to Python, was weighed: it knows drafts
up to 7 (the schemas are 2020-12) and compiling the compose schema takes ~116 ms at every start,
more than half the loader's whole budget.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Check = Callable[[Any], bool]

# Keywords that do not constrain a value.
_IGNORED = frozenset({"description", "title", "deprecated", "default", "examples", "$comment", "$schema", "$id",
                      "$defs", "definitions"})


def _never(value: Any) -> bool:
    return False


def _always(value: Any) -> bool:
    return True


# --- jsonschema's semantics (jsonschema/_utils.py and the draft 2020-12 type checker) ---------------

def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _is_number,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
}
_TRUE, _FALSE = object(), object()


def _unbool(v: Any) -> Any:
    return _TRUE if v is True else _FALSE if v is False else v


def equal(one: Any, two: Any) -> bool:
    """jsonschema's `equal`: JSON equality (True is not 1), recursing into lists and mappings."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return one == two
    if isinstance(one, Sequence) and isinstance(two, Sequence):
        return len(one) == len(two) and all(equal(i, j) for i, j in zip(one, two))
    if isinstance(one, Mapping) and isinstance(two, Mapping):
        return len(one) == len(two) and all(k in two and equal(v, two[k]) for k, v in one.items())
    return _unbool(one) == _unbool(two)


def _unique(items: list) -> bool:
    """No two items `equal`: every pair compared (jsonschema's own fallback), so never more lenient."""
    if all(type(i) is str for i in items):
        return len(set(items)) == len(items)
    seen: list = []
    for item in items:
        if any(equal(s, item) for s in seen):
            return False
        seen.append(item)
    return True


# --- compiling ------------------------------------------------------------------------------------

def compile_schema(schema: Any) -> Check:
    """A function telling whether a value is valid against `schema` (a `$ref`-free schema)."""
    if schema is True or schema == {}:
        return _always
    if schema is False or not isinstance(schema, dict):
        return _never
    checks: list[Check] = []
    if "type" in schema:
        checks.append(_type(schema["type"]))
    if any(k in schema for k in ("properties", "patternProperties", "additionalProperties")):
        checks.append(_object(schema))
    for key, value in schema.items():
        if key in _IGNORED or key in ("type", "properties", "patternProperties", "additionalProperties"):
            continue
        make = _KEYWORDS.get(key)
        checks.append(make(value) if make is not None else _never)
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]
    checks_t = tuple(checks)
    return lambda v: all(c(v) for c in checks_t)


def _type(expected: Any) -> Check:
    names = [expected] if isinstance(expected, str) else list(expected) if isinstance(expected, list) else None
    if not names or any(n not in _TYPES for n in names):
        return _never
    if len(names) == 1:
        return _TYPES[names[0]]
    tests = tuple(_TYPES[n] for n in names)
    return lambda v: any(t(v) for t in tests)


def _object(schema: dict) -> Check:
    props = {k: compile_schema(s) for k, s in (schema.get("properties") or {}).items()}
    patterns = [(re.compile(p), compile_schema(s)) for p, s in (schema.get("patternProperties") or {}).items()]
    joined = re.compile("|".join(schema.get("patternProperties") or {})) if patterns else None
    additional = schema.get("additionalProperties", True)
    extra: Check | None = None if additional is True else compile_schema(additional)

    def check(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        for key, value in v.items():
            if type(key) is not str:
                return False  # jsonschema's pattern matching would not take it: let it say what it does
            prop = props.get(key)
            if prop is not None and not prop(value):
                return False
            for pattern, sub in patterns:
                if pattern.search(key) and not sub(value):
                    return False
            if extra is not None and prop is None and not (joined and joined.search(key)) and not extra(value):
                return False
        return True

    return check


def _items(items: Any) -> Check:
    sub = compile_schema(items)
    if sub is _always:
        return _always
    return lambda v: not isinstance(v, list) or all(sub(i) for i in v)


def _combinator(count: Callable[[int, int], bool]) -> Callable[[Any], Check]:
    def make(branches: Any) -> Check:
        if not isinstance(branches, list) or not branches:
            return _never
        subs = tuple(compile_schema(b) for b in branches)
        return lambda v: count(sum(1 for s in subs if s(v)), len(subs))
    return make


def _enum(allowed: Any) -> Check:
    if not isinstance(allowed, list):
        return _never
    if all(type(a) is str for a in allowed):
        names = frozenset(allowed)
        return lambda v: isinstance(v, str) and v in names
    return lambda v: any(equal(a, v) for a in allowed)


def _pattern(pattern: Any) -> Check:
    compiled = re.compile(pattern)
    return lambda v: not isinstance(v, str) or compiled.search(v) is not None


def _number_bound(ok: Callable[[Any, Any], bool]) -> Callable[[Any], Check]:
    def make(bound: Any) -> Check:
        if not _is_number(bound):
            return _never
        return lambda v: not _is_number(v) or ok(v, bound)
    return make


def _required(keys: Any) -> Check:
    keys_t = tuple(keys) if isinstance(keys, list) else None
    if keys_t is None:
        return _never
    return lambda v: not isinstance(v, dict) or all(k in v for k in keys_t)


def _length(ok: Callable[[int, Any], bool], kind: type) -> Callable[[Any], Check]:
    def make(bound: Any) -> Check:
        if not _is_number(bound):
            return _never
        return lambda v: not isinstance(v, kind) or ok(len(v), bound)
    return make


_KEYWORDS: dict[str, Callable[[Any], Check]] = {
    "items": _items,
    "oneOf": _combinator(lambda n, total: n == 1),
    "anyOf": _combinator(lambda n, total: n >= 1),
    "allOf": _combinator(lambda n, total: n == total),
    "enum": _enum,
    "const": lambda c: lambda v: equal(c, v),
    "pattern": _pattern,
    "required": _required,
    "minimum": _number_bound(lambda v, b: v >= b),
    "maximum": _number_bound(lambda v, b: v <= b),
    "exclusiveMinimum": _number_bound(lambda v, b: v > b),
    "exclusiveMaximum": _number_bound(lambda v, b: v < b),
    "minLength": _length(lambda n, b: n >= b, str),
    "maxLength": _length(lambda n, b: n <= b, str),
    "minItems": _length(lambda n, b: n >= b, list),
    "maxItems": _length(lambda n, b: n <= b, list),
    "uniqueItems": lambda u: (lambda v: not isinstance(v, list) or _unique(v)) if u else _always,
}
