"""Reading one YAML spec file into located plain data.

Everything after this module works on `Map` and `Seq`: a `dict` and a `list` that remember where each
key and value came from (file, line, column), so an error found late (after interpolation, merging
and `extends`) still points at the line a person wrote. Scalars stay plain Python values.

The reader follows what Docker Compose (go-yaml v3) does, not PyYAML's defaults:
- YAML 1.2 core schema: `no`, `on`, `yes` are strings, `22:22` is a string, `010` is 10;
- duplicate keys are an error (PyYAML keeps the last one silently);
- `<<` merge keys work; `!reset` and `!override` tags are kept for the merge step;
- one document per file, a mapping at the top, a size cap, and a cap on alias expansion so an
  alias bomb ("billion laughs") is refused instead of eating the machine.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import KeyPath, Location, Problem, SpecError

MAX_FILE_BYTES = 8 * 1024 * 1024
# Nodes after expanding every alias. A 500-service stack is ~50k; a billion-laughs file is 10^9.
MAX_EXPANDED_NODES = 1_000_000
# Real compose files nest about 8 deep; every later stage recurses, so refuse silly depths early.
MAX_DEPTH = 100

RESET = "reset"
OVERRIDE = "override"
_TAGS = {"!reset": RESET, "!override": OVERRIDE}
_SURROGATE = re.compile("[\ud800-\udfff]")


class Map(dict):
    """A mapping that knows where its keys and values are. Tags are compose's merge tags."""

    __slots__ = ("loc", "key_locs", "value_locs", "tags")

    def __init__(self, *args: Any, loc: Location | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.loc = loc
        self.key_locs: dict[str, Location] = {}
        self.value_locs: dict[str, Location] = {}
        self.tags: dict[str, str] = {}

    def set(self, key: str, value: Any, *, like: Map | None = None, from_key: str | None = None) -> None:
        """Set `key`, taking its locations (and tag) from `like[from_key]` when given."""
        self[key] = value
        if like is not None:
            src = key if from_key is None else from_key
            if src in like.key_locs:
                self.key_locs[key] = like.key_locs[src]
            if src in like.value_locs:
                self.value_locs[key] = like.value_locs[src]
            if src in like.tags:
                self.tags[key] = like.tags[src]

    def copy_meta(self, other: Map) -> Map:
        """A new empty Map at `other`'s location (keys are added with `set`)."""
        return Map(loc=other.loc)

    def __reduce__(self):  # pickling and deepcopy keep the locations
        return (_rebuild_map, (dict(self), self.loc, self.key_locs, self.value_locs, self.tags))


def _rebuild_map(items, loc, key_locs, value_locs, tags) -> Map:
    m = Map(items, loc=loc)
    m.key_locs, m.value_locs, m.tags = dict(key_locs), dict(value_locs), dict(tags)
    return m


class Seq(list):
    """A sequence that knows where it and each item are."""

    __slots__ = ("loc", "item_locs")

    def __init__(self, *args: Any, loc: Location | None = None, item_locs: list[Location | None] | None = None):
        super().__init__(*args)
        self.loc = loc
        self.item_locs: list[Location | None] = list(item_locs) if item_locs is not None else [loc] * len(self)

    def __reduce__(self):
        return (_rebuild_seq, (list(self), self.loc, self.item_locs))


def _rebuild_seq(items, loc, item_locs) -> Seq:
    return Seq(items, loc=loc, item_locs=item_locs)


def item_loc(seq: Seq | list, index: int) -> Location | None:
    if isinstance(seq, Seq) and 0 <= index < len(seq.item_locs):
        return seq.item_locs[index]
    return getattr(seq, "loc", None)


def locate(tree: Any, path: KeyPath) -> Location | None:
    """The most precise location known for `path` in `tree`: the value's, else its nearest parent's."""
    best: Location | None = getattr(tree, "loc", None)
    node = tree
    for part in path:
        if isinstance(node, Map) and isinstance(part, str) and part in node:
            best = node.value_locs.get(part) or node.key_locs.get(part) or best
            node = node[part]
        elif isinstance(node, Seq) and isinstance(part, int) and 0 <= part < len(node):
            best = item_loc(node, part) or best
            node = node[part]
        else:
            break
    return best


def locate_key(tree: Any, path: KeyPath) -> Location | None:
    """Like `locate`, but for a mapping key points at the key rather than its value."""
    if path and isinstance(path[-1], str):
        parent = tree
        for part in path[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                return locate(tree, path)
        if isinstance(parent, Map) and path[-1] in parent.key_locs:
            return parent.key_locs[path[-1]]
    return locate(tree, path)


def problem_at(tree: Any, path: KeyPath, message: str, *, key: bool = False) -> Problem:
    """A Problem located at `path` in `tree`."""
    return Problem(message, path=path, location=(locate_key if key else locate)(tree, path))


# --- YAML 1.2 core schema -----------------------------------------------------------------------

class _Resolver(yaml.resolver.BaseResolver):
    pass


_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# go-yaml v3 (what Compose reads with) keeps YAML 1.1's octal `0440` beside 1.2's `0o440`: a
# secret's `mode: 0440` must mean r--r-----, not decimal 440.
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    # and, like Go's ParseInt after go-yaml drops every "_": 1_000, 0b101, -0x10.
    re.compile(r"^[-+]?(?:[0-9][0-9_]*|0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+)$"),
    list("-+0123456789"),
)
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_Resolver.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
_Resolver.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])


def _loc(file: str, node: Node) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


class _Loader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer, _Resolver):
    """Composes the node graph only; `_Builder` turns nodes into located data."""

    def __init__(self, stream: str):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _Resolver.__init__(self)


if getattr(yaml, "__with_libyaml__", False):

    class _CLoader(yaml._yaml.CParser, _Resolver):
        """libyaml's parser with our resolver: ten times faster on large stacks."""

        def __init__(self, stream: str):
            yaml._yaml.CParser.__init__(self, stream)
            _Resolver.__init__(self)

    _make_loader = _CLoader
else:  # pragma: no cover - PyYAML built without libyaml
    _make_loader = _Loader


class _Refused(Exception):
    """Stops building at once: the document is too deep, too large once expanded, or recursive."""

    def __init__(self, node: Node, message: str):
        self.node, self.message = node, message


class _Builder:
    """Nodes -> Map/Seq/scalars. Aliased nodes build once and are shared, like PyYAML does.

    While building it measures each subtree with its aliases expanded (size and height, memoised
    per node, so an alias bomb is measured without being expanded): every later stage walks the
    expanded tree, so the caps apply to that."""

    def __init__(self, file: str):
        self.file = file
        self.built: dict[int, Any] = {}
        self.measure: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, height)
        self.problems: list[Problem] = []

    def build(self, node: Node, depth: int = 0) -> Any:
        key = id(node)
        if key in self.built:
            if key not in self.measure:
                raise _Refused(node, "a YAML alias refers to a node that contains it (a recursive structure)")
            if depth + self.measure[key][1] > MAX_DEPTH:
                raise _Refused(node, f"nesting is deeper than {MAX_DEPTH} levels")
            return self.built[key]
        if depth > MAX_DEPTH:
            raise _Refused(node, f"nesting is deeper than {MAX_DEPTH} levels")
        if isinstance(node, ScalarNode):
            self.built[key] = value = self.scalar(node)
            self.measure[key] = (1, 0)
            return value
        if isinstance(node, SequenceNode):
            value = Seq(loc=_loc(self.file, node), item_locs=[])
            self.built[key] = value
            for item in node.value:
                self.check_tag(item, "a sequence item")
                value.append(self.build(item, depth + 1))
                value.item_locs.append(_loc(self.file, item))
            children = node.value
        elif isinstance(node, MappingNode):
            value = Map(loc=_loc(self.file, node))
            self.built[key] = value
            self.mapping(node, value, depth)
            children = [n for pair in node.value for n in pair]
        else:  # pragma: no cover - the composer makes only these three
            raise TypeError(node)
        size, height = 1, 0
        for child in children:
            child_size, child_height = self.measure.get(id(child), (1, 0))
            size += child_size
            height = max(height, child_height + 1)
        if size > MAX_EXPANDED_NODES:
            raise _Refused(node, f"YAML aliases expand to more than {MAX_EXPANDED_NODES:,} nodes "
                                 "(an alias bomb?); refusing to load")
        self.measure[key] = (size, height)
        return value

    def check_tag(self, node: Node, where: str) -> None:
        if node.tag in _TAGS:
            self.error(node, f"{node.tag} is only allowed on a mapping value, not on {where}")

    def error(self, node: Node, message: str) -> None:
        self.problems.append(Problem(message, location=_loc(self.file, node)))

    def scalar(self, node: ScalarNode) -> Any:
        tag, raw = node.tag, node.value
        if node.style == '"' and _SURROGATE.search(raw):
            # JSON-style "\ud83d\ude00" escapes: PyYAML leaves the two halves apart; join them.
            raw = raw.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        if tag in _TAGS or tag == "tag:yaml.org,2002:str":
            if tag in _TAGS and not node.style:  # plain: None from PyYAML, "" from libyaml  # `!reset` alone or `!reset null`: an empty value
                resolved = _Resolver().resolve(ScalarNode, raw, (True, False))
                if resolved == "tag:yaml.org,2002:null":
                    return None
            return raw
        if tag == "tag:yaml.org,2002:null":
            return None
        if tag == "tag:yaml.org,2002:bool":
            return raw.lower() == "true"
        if tag == "tag:yaml.org,2002:int":
            return _go_int(raw)
        if tag == "tag:yaml.org,2002:float":
            low = raw.lower()
            if low.endswith("inf"):
                return float("-inf") if low.startswith("-") else float("inf")
            if low == ".nan":
                return float("nan")
            return float(raw)
        if tag == "tag:yaml.org,2002:merge":
            return raw
        self.error(node, f"unsupported YAML tag {tag}")
        return raw

    def mapping(self, node: MappingNode, out: Map, depth: int) -> None:
        explicit: list[tuple[Node, Node]] = []
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merges.append(value_node)
            else:
                explicit.append((key_node, value_node))
        # `<<` sources come first (earlier ones win among themselves), explicit keys override them.
        for source in merges:
            items = source.value if isinstance(source, SequenceNode) else [source]
            for item in reversed(items):
                merged = self.build(item, depth + 1)
                if not isinstance(merged, Map):
                    self.error(item, "a << merge key needs a mapping or a list of mappings")
                    continue
                for k, v in merged.items():
                    out.set(k, v, like=merged)
        seen: dict[str, Location] = {}
        for key_node, value_node in explicit:
            if not isinstance(key_node, ScalarNode):
                self.error(key_node, "a mapping key must be a plain value, not a list or mapping")
                continue
            key = self.build(key_node, depth + 1)
            if key is None:
                self.error(key_node, "empty mapping key")
                continue
            key = _key_str(key)
            here = _loc(self.file, key_node)
            if key in seen:
                self.error(key_node, f"duplicate key {key!r} (first defined at line {seen[key].line})")
                continue
            seen[key] = here
            out[key] = self.build(value_node, depth + 1)
            out.key_locs[key] = here
            out.value_locs[key] = _loc(self.file, value_node)
            out.tags.pop(key, None)
            if value_node.tag in _TAGS:
                out.tags[key] = _TAGS[value_node.tag]


def _go_int(raw: str) -> int | str:
    """An integer as go-yaml v3 reads it: underscores dropped, then Go's base-0 rules, where a
    leading 0 means octal. What Go would not take as an integer stays a string here."""
    text = raw.replace("_", "")
    sign = -1 if text[:1] == "-" else 1
    digits = text.lstrip("+-")
    try:
        if digits[:2].lower() in ("0x", "0o", "0b"):
            return sign * int(digits, 0)
        if len(digits) > 1 and digits[0] == "0" and set(digits) <= set("01234567"):
            return sign * int(digits, 8)
        return sign * int(digits, 10)
    except ValueError:
        return raw


def _key_str(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def parse_yaml(text: str, file: str) -> Map:
    """Parse one spec document. Raises SpecError with every problem found, each located."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise SpecError(Problem(f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB", file=file))
    try:
        root = _compose(_make_loader, text, file)
    except SpecError:
        if _make_loader is _Loader:
            raise
        # libyaml's messages are terser and it refuses JSON surrogate escapes: on any error, ask
        # the pure-Python parser, which either explains better or accepts the file.
        root = _compose(_Loader, text, file)
    if root is None:
        raise SpecError(Problem("the file is empty: a spec needs at least a 'services' mapping", file=file))
    if not isinstance(root, MappingNode):
        kind = "a list" if isinstance(root, SequenceNode) else "a single value"
        raise SpecError(Problem(f"the top level must be a mapping of keys (services, networks, ...), not {kind}",
                                location=_loc(file, root)))
    builder = _Builder(file)
    try:
        tree = builder.build(root)
    except _Refused as exc:
        raise SpecError(Problem(exc.message, location=_loc(file, exc.node))) from None
    if builder.problems:
        raise SpecError(builder.problems)
    return tree


def _compose(make_loader: Any, text: str, file: str) -> Node | None:
    loader = make_loader(text)
    try:
        return loader.get_single_node()
    except RecursionError:
        raise SpecError(Problem(f"nesting is deeper than {MAX_DEPTH} levels", file=file)) from None
    except yaml.composer.ComposerError as exc:
        mark = exc.problem_mark
        if exc.problem and "expected a single document" in (exc.context or ""):
            msg = "a spec file holds one YAML document; found another after '---'"
        else:
            msg = f"{exc.context + ', ' if exc.context else ''}{exc.problem}"
        raise SpecError(_located(msg, file, mark)) from None
    except yaml.MarkedYAMLError as exc:
        if "exceeded maximum nesting depth" in (exc.problem or ""):  # libyaml's own cap
            raise SpecError(Problem(f"nesting is deeper than {MAX_DEPTH} levels", file=file)) from None
        msg = f"{exc.context + ', ' if exc.context else ''}{exc.problem}".replace("\n", " ")
        raise SpecError(_located(f"invalid YAML: {msg}", file, exc.problem_mark or exc.context_mark)) from None
    except yaml.YAMLError as exc:  # reader errors: bad encoding, control characters
        raise SpecError(Problem(f"invalid YAML: {exc}", file=file)) from None
    finally:
        loader.dispose()


def _located(message: str, file: str, mark: Any) -> Problem:
    if mark is None:
        return Problem(message, file=file)
    return Problem(message, location=Location(file, mark.line + 1, mark.column + 1))


def read_text(path: str, display: str | None = None, *, what: str = "spec file") -> str:
    """A spec or env file's text, refused with a clear message when it is missing, a directory,
    unreadable, over the size cap or not UTF-8. `display` is the name errors show."""
    name = display or path
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(Problem("no such file", file=name)) from None
    except IsADirectoryError:
        raise SpecError(Problem(f"is a directory, not {'an' if what[0] in 'aeiou' else 'a'} {what}", file=name)) from None
    except OSError as exc:
        raise SpecError(Problem(f"cannot read: {exc.strerror}", file=name)) from None
    if len(data) > MAX_FILE_BYTES:
        raise SpecError(Problem(f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB", file=name))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(Problem(f"not UTF-8 text (byte {exc.start})", file=name)) from None


def read_yaml(path: str, display: str | None = None) -> Map:
    """Read and parse a spec file; `display` is the name errors show (defaults to `path`)."""
    return parse_yaml(read_text(path, display), display or path)
