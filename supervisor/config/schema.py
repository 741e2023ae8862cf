"""Validating the merged raw compose tree against the compose JSON schema, with located messages.

jsonschema's own messages are written for schema authors ("Additional properties are not allowed
('imag' was unexpected)", "... is not valid under any of the given schemas" followed by a dump of
the schema). People writing a compose file need the key path, the line and column, and one short
sentence saying what is wrong and what would be right. This module turns each jsonschema error into
such a `Problem`, pointing into the `Map`/`Seq` tree that `source.py` built.

The same machinery validates pysup's own `x-pysup` keys (see `checks.xpysup_problems`), so it is
written for any draft 2020-12 schema that keeps its `$ref`s local (`#/$defs/...`).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import KeyPath, Problem
from .source import Map, locate, locate_key

if TYPE_CHECKING:  # imported when first needed: a valid file never does (see _fast_validator)
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"
COMPOSE_SCHEMA = "compose-spec.json"

# How a value's kind is named in messages, and the order kinds are listed in ("a list or a string").
_KIND_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean (true or false)",
    "null": "empty",
}
_KIND_ORDER = list(_KIND_NAMES)

# What a regex in the schemas means, for people: the exact pattern string -> (what the value is,
# what is expected). A None noun means "use the key's own name". Patterns of pysup's own schema
# (x-pysup.json) are here too.
PATTERN_HINTS: dict[str, tuple[str | None, str]] = {
    "^[a-zA-Z0-9._-]+$": ("name", 'only letters, digits, ".", "_" and "-" are allowed'),
    "^[a-z]+$": ("ulimit", 'expected a lower-case ulimit name like "nofile" or "nproc"'),
    "[a-zA-Z0-9][a-zA-Z0-9_.-]+": (
        "container name",
        'expected at least 2 characters of letters, digits, "_", "." and "-", starting with a letter or digit',
    ),
    "always|never|build|if_not_present|missing|refresh|daily|weekly|every_([0-9]+[wdhms])+": (
        "pull_policy",
        'expected "always", "never", "missing", "build", "if_not_present", "refresh", "daily", '
        '"weekly" or "every_<duration>" like "every_12h"',
    ),
    # x-pysup.json
    "^([0-9]+(\\.[0-9]+)?(us|ms|s|m|h))+$": (
        "duration", 'expected a number of seconds or a duration like "100ms", "30s" or "1m30s"'),
    "^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?$": (
        "registry host", 'expected a host name with an optional port, like "docker.io" or "registry.local:5000"'),
    "^[0-9A-Fa-f.:]+/[0-9]{1,3}$": ("subnet", 'expected an address range in CIDR notation, like "10.89.0.0/16"'),
}
# What the keys of a name-only mapping are called, by the mapping's own key.
_NAME_NOUNS = {
    "services": "service name",
    "networks": "network name",
    "volumes": "volume name",
    "secrets": "secret name",
    "configs": "config name",
    "models": "model name",
    "depends_on": "service name",
    "ulimits": "ulimit",
    "registries": "registry host",
}
_YAML11_BOOLS = {"yes", "no", "on", "off", "y", "n"}


@functools.cache
def load_schema(name: str = COMPOSE_SCHEMA) -> dict[str, Any]:
    """The parsed JSON of a schema shipped in `supervisor/schema/`."""
    with open(SCHEMA_DIR / name, encoding="utf-8") as f:
        return json.load(f)


@functools.cache
def validator(name: str = COMPOSE_SCHEMA) -> Draft202012Validator:
    """A validator for a shipped schema, built once on first use.

    The schema is flattened first (see `flatten`): jsonschema then spends no time resolving `$ref`s,
    which makes validating a 200-service file about a quarter faster.
    """
    from jsonschema import Draft202012Validator

    return Draft202012Validator(flatten(load_schema(name)))


@functools.cache
def _fast_validator(name: str) -> Any:
    """A pure-Python "valid?" (`schema_check`): ~10 ms for a 200-service file where jsonschema
    takes ~110 ms. Valid files, the common case on every load and reload, stop there; an invalid one
    is validated again by jsonschema, whose errors carry what the messages below are made from.
    Built from a fresh parse of the schema, so the closures keep only what they check."""
    from .schema_check import compile_schema

    with open(SCHEMA_DIR / name, encoding="utf-8") as f:
        return compile_schema(flatten(json.load(f)))


# Keywords whose value is one subschema, a list of subschemas, or a name -> subschema mapping.
_ONE_SCHEMA = {"items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else",
               "unevaluatedItems", "unevaluatedProperties"}
_SCHEMA_LISTS = {"oneOf", "anyOf", "allOf", "prefixItems"}
_SCHEMA_MAPS = {"properties", "patternProperties", "dependentSchemas"}
_ANNOTATIONS = {"description", "title", "deprecated", "default", "examples", "$comment"}


def flatten(root: dict[str, Any]) -> dict[str, Any]:
    """`root` with every local `$ref` replaced by its target and annotations dropped.

    Only the validation result matters here, so descriptions go. A `$ref` that would recurse into
    itself is kept as it is (the compose schema has none).
    """
    defs = root.get("$defs", {})
    kept_refs = False

    def walk(node: Any, active: tuple[str, ...]) -> Any:
        nonlocal kept_refs
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in defs and ref[8:] not in active:
            target = walk(defs[ref[8:]], active + (ref[8:],))
            rest = {k: v for k, v in node.items() if k != "$ref" and k not in _ANNOTATIONS}
            if not rest:
                return target
            out["allOf"] = [target]
            node = rest
        elif ref is not None:
            kept_refs = True
        for key, value in node.items():
            if key in _ANNOTATIONS or key == "$defs":
                continue
            if key in _ONE_SCHEMA:
                out[key] = walk(value, active)
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                out[key] = [walk(v, active) for v in value]
            elif key in _SCHEMA_MAPS and isinstance(value, dict):
                out[key] = {k: walk(v, active) for k, v in value.items()}
            else:
                out[key] = value
        return out

    flat = walk(root, ())
    if kept_refs:  # a recursive (or non-local) reference still needs its targets
        flat["$defs"] = defs
    return flat


def validate(tree: Map) -> list[Problem]:
    """Every place where the merged compose tree breaks the compose schema, sorted by location.

    `x-` keys (pysup's `x-pysup` among them) are allowed anywhere by the compose schema and not
    looked into here.
    """
    return schema_problems(tree, COMPOSE_SCHEMA)


def schema_problems(tree: Any, schema: str) -> list[Problem]:
    """Problems found validating `tree` against a schema shipped in `supervisor/schema/`, sorted.

    One Problem per distinct (key path, message), located in `tree` so it points at what a person
    wrote.
    """
    if _fast_validator(schema)(tree):
        return []
    converter = _Converter(tree, load_schema(schema))
    problems: dict[tuple[KeyPath, str], Problem] = {}
    for error in validator(schema).iter_errors(tree):
        for problem in converter.convert(error):
            problems.setdefault((problem.path, problem.message), problem)
    return sort_problems(problems.values())


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Problems in file order (file, line, column), unlocated ones last; ties by key path."""

    def key(p: Problem) -> tuple:
        loc = p.location
        where = (0, loc.file, loc.line, loc.col) if loc else (1, p.file or "", 0, 0)
        return (*where, tuple((isinstance(x, int), str(x)) for x in p.path), p.message)

    return sorted(problems, key=key)


# --- describing values ----------------------------------------------------------------------------

def json_kind(value: Any) -> str:
    """The JSON-schema type name of a YAML value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def quote(value: Any, limit: int = 60) -> str:
    """A scalar as a message shows it: strings in double quotes (shortened), others as YAML writes them."""
    if isinstance(value, str):
        text = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        if len(text) > limit:
            text = text[: limit - 3] + "..."
        return f'"{text}"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def describe(value: Any) -> str:
    """What was found, for "must be X, found Y": a quoted scalar, or the kind of a collection."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "an empty value"
    return quote(value)


def kinds_phrase(kinds: Iterable[str]) -> str:
    """`{"string", "array"}` -> "a list or a string" (in a fixed order, null left out when others exist)."""
    kinds = set(kinds)
    if "integer" in kinds and "number" in kinds:
        kinds.discard("integer")
    if len(kinds) > 1:
        kinds.discard("null")
    ordered = sorted(kinds, key=lambda k: _KIND_ORDER.index(k) if k in _KIND_ORDER else len(_KIND_ORDER))
    names = [_KIND_NAMES.get(k, k) for k in ordered]
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " or " + names[-1]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean "image"?)` for a close match, else ""."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _accepts(kinds: set[str] | None, value: Any) -> bool:
    if kinds is None:
        return True
    kind = json_kind(value)
    if kind in kinds:
        return True
    if kind == "integer" and "number" in kinds:
        return True
    return kind == "number" and "integer" in kinds and float(value).is_integer()


# --- jsonschema errors -> Problems ----------------------------------------------------------------

class _Converter:
    """Turns jsonschema errors into Problems for one tree and one schema."""

    def __init__(self, tree: Any, root_schema: dict[str, Any]):
        self.tree = tree
        self.root = root_schema

    def convert(self, error: ValidationError) -> Iterator[Problem]:
        path: KeyPath = tuple(error.absolute_path)
        handler = getattr(self, f"_on_{error.validator}", None)
        if handler is not None:
            yield from handler(error, path)
        else:
            yield self._at(path, f"invalid value {describe(error.instance)}")

    def _at(self, path: KeyPath, message: str, *, key: bool = False) -> Problem:
        loc = (locate_key if key else locate)(self.tree, path)
        return Problem(message, path=path, location=loc)

    # schema helpers
    def deref(self, schema: Any) -> Any:
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < 32:
            ref = schema["$ref"]
            if not ref.startswith("#/"):
                break
            node: Any = self.root
            for part in ref[2:].split("/"):
                node = node[part]
            schema, seen = node, seen + 1
        return schema

    def kinds(self, schema: Any) -> set[str] | None:
        """The JSON types a (sub)schema can accept; None when it does not say (accepts anything)."""
        schema = self.deref(schema)
        if not isinstance(schema, dict):
            return None if schema is not False else set()
        if "type" in schema:
            t = schema["type"]
            return {t} if isinstance(t, str) else set(t)
        if "enum" in schema:
            return {json_kind(v) for v in schema["enum"]}
        if "const" in schema:
            return {json_kind(schema["const"])}
        for combinator in ("oneOf", "anyOf"):
            if combinator in schema:
                out: set[str] = set()
                for branch in schema[combinator]:
                    k = self.kinds(branch)
                    if k is None:
                        return None
                    out |= k
                return out
        return None

    # one handler per jsonschema keyword
    def _on_additionalProperties(self, error: ValidationError, path: KeyPath) -> Iterator[Problem]:
        schema = error.schema if isinstance(error.schema, dict) else {}
        known = list(schema.get("properties", {}))
        patterns = list(schema.get("patternProperties", {}))
        instance = error.instance if isinstance(error.instance, dict) else {}
        extras = [k for k in instance if k not in known and not any(re.search(p, k) for p in patterns)]
        name_patterns = [p for p in patterns if p != "^x-"]
        for key in extras:
            where = path + (key,)
            if not known and name_patterns:
                noun = _NAME_NOUNS.get(str(path[-1]) if path else "", "name")
                _, hint = PATTERN_HINTS.get(name_patterns[0], (None, f"expected a key matching {name_patterns[0]}"))
                yield self._at(where, f'invalid {noun} "{key}": {hint}', key=True)
            else:
                yield self._at(where, f'unknown key "{key}"{did_you_mean(key, known)}', key=True)

    def _on_type(self, error: ValidationError, path: KeyPath) -> Iterator[Problem]:
        expected = error.validator_value
        kinds = {expected} if isinstance(expected, str) else set(expected)
        yield self._at(path, self._type_message(kinds, error.instance))

    def _type_message(self, kinds: set[str], found: Any) -> str:
        message = f"must be {kinds_phrase(kinds)}, found {describe(found)}"
        if "boolean" in kinds and isinstance(found, str) and found.lower() in _YAML11_BOOLS:
            message += " (YAML 1.2 booleans are only true and false)"
        return message

    def _on_enum(self, error: ValidationError, path: KeyPath) -> Iterator[Problem]:
        allowed = list(error.validator_value)
        message = "must be one of: " + ", ".join(quote(v) for v in allowed) + f", found {describe(error.instance)}"
        if isinstance(error.instance, str):
            message += did_you_mean(error.instance, [v for v in allowed if isinstance(v, str)])
        yield self._at(path, message)

    def _on_const(self, error: ValidationError, path: KeyPath) -> Iterator[Problem]:
        yield self._at(path, f"must be {quote(error.validator_value)}, found {describe(error.instance)}")

    def _on_required(self, error: ValidationError, path: KeyPath) -> Iterator[Problem]:
        instance = error.instance if isinstance(error.instance, dict) else {}
        for key in error.validator_value:
            if key not in instance:
                yield self._at(path, f'missing required key "{key}"')

    def _on_pattern(self, error: ValidationError, path: KeyPath) -> Iterator[Problem]:
        pattern = error.validator_value
        noun, hint = PATTERN_HINTS.get(pattern, (None, f"expected a value matching {pattern}"))
        if noun is None:
            noun = str(path[-1]) if path and isinstance(path[-1], str) else "value"
        yield self._at(path, f"invalid {noun} {describe(error.instance)}: {hint}")

    def _on_minimum(self, error: ValidationError, path: KeyPath) -> Iterator[Problem]:
        yield self._at(path, f"must be at least {error.validator_value}, found {describe(error.instance)}")

    def _on_maximum(self, error: ValidationError, path: KeyPath) -> Iterator[Problem]:
        yield self._at(path, f"must be at most {error.validator_value}, found {describe(error.instance)}")

    def _on_exclusiveMinimum(self, error: ValidationError, path: KeyPath) -> Iterator[Problem]:
        yield self._at(path, f"must be more than {error.validator_value}, found {describe(error.instance)}")

    def _on_minLength(self, error: ValidationError, path: KeyPath) -> Iterator[Problem]:
        if error.validator_value == 1:
            yield self._at(path, "must not be empty")
        else:
            yield self._at(path, f"must be at least {error.validator_value} characters long")

    def _on_minItems(self, error: ValidationError, path: KeyPath) -> Iterator[Problem]:
        yield self._at(path, f"must have at least {error.validator_value} item(s)")

    def _on_uniqueItems(self, error: ValidationError, path: KeyPath) -> Iterator[Problem]:
        items = error.instance if isinstance(error.instance, list) else []
        seen: set[str] = set()
        reported = False
        for index, item in enumerate(items):
            canon = json.dumps(item, sort_keys=True, default=str)
            if canon in seen:
                what = f" {describe(item)}" if not isinstance(item, (dict, list)) else ""
                yield self._at(path + (index,), f"duplicate entry{what}")
                reported = True
            seen.add(canon)
        if not reported:  # equal only by JSON rules (1 and 1.0): point at the list
            yield self._at(path, "must not contain duplicate entries")

    def _on_oneOf(self, error: ValidationError, path: KeyPath) -> Iterator[Problem]:
        yield from self._one_of(error, path)

    def _on_anyOf(self, error: ValidationError, path: KeyPath) -> Iterator[Problem]:
        yield from self._one_of(error, path)

    def _one_of(self, error: ValidationError, path: KeyPath) -> Iterator[Problem]:
        """Report what is wrong inside the alternative the value was evidently meant to be.

        A value that is a mapping was meant as the mapping form, a string as the string form, and
        so on; only when no alternative takes a value of its kind is the message about the kind.
        """
        branches: list[Any] = list(error.validator_value)
        fitting = [i for i, b in enumerate(branches) if _accepts(self.kinds(b), error.instance)]
        if not fitting:
            kinds: set[str] = set()
            for b in branches:
                kinds |= self.kinds(b) or set()
            yield self._at(path, self._type_message(kinds, error.instance))
            return
        by_branch: dict[int, list[ValidationError]] = {}
        for sub in error.context or ():
            by_branch.setdefault(sub.relative_schema_path[0], []).append(sub)
        if any(i not in by_branch for i in fitting):
            # A fitting alternative raised no error, so the value fits several of them at once.
            yield self._at(path, f"ambiguous value {describe(error.instance)}: it fits more than one allowed form")
            return
        # Among several fitting alternatives, the one the value got furthest into, then the one with
        # the fewest errors, is the one the person meant.
        chosen = min(
            fitting,
            key=lambda i: (-max(len(e.absolute_path) for e in by_branch[i]), len(by_branch[i]), i),
        )
        for sub in by_branch[chosen]:
            yield from self.convert(sub)
