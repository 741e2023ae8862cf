"""Merging compose files, `extends` and `include`, on the located tree (before schema validation).

This follows compose-go (`override/merge.go`, `override/uncity.go`, `loader/extends.go`,
`loader/include.go`, `loader/reset.go`, `paths/resolve.go`) and the compose spec (`13-merge.md`,
`14-include.md`, `05-services.md#extends`), so a file set that loads in `docker compose` loads the same
way here. Every key and value keeps the location of the line that supplied it, so a later error still
points at the file a person has to edit.

How the loader is expected to use this module, per `-f` file in order (the same order as compose-go's
`loadYamlFile`: extends, then include, then merge into what came before):

    tree = interpolate(read_yaml(path))
    tree = resolve_extends(tree, file=path, load=load_interpolated)
    tree = resolve_include(tree, file=path, load_project=load_sub_project)
    trees.append(tree)
    merged = merge_all(trees)   # strip_reset / merge_files / enforce_unicity

`!reset` and `!override` (source.py keeps them in `Map.tags`):
- In `merge_files(base, override)` a `!reset` key of the override removes the key from the result and an
  `!override` key replaces the base value instead of merging. The result carries no tags.
- A single file's `!reset` keys just mean "unset": `strip_reset` removes them (compose-go drops them
  while parsing). `merge_files` strips its base the same way, so passing a raw first file is fine.
- `resolve_extends` applies the extending service's tags to its base, and then KEEPS the tagged keys in
  the result (a `!reset` key keeps its written value, tagged), because compose-go records reset paths
  per file and applies them to the earlier `-f` files too. `merge_files`/`merge_all`/`strip_reset`
  remove them afterwards; never validate a tree that has not been through one of those.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any

from ..errors import KeyPath, Location, Problem, SpecError
from .source import OVERRIDE, RESET, Map, Seq, item_loc

Pattern = tuple[str, ...]
LoadFile = Callable[[str], Map]
LoadProject = Callable[[list[str], str | None, list[str] | None], Map]

_COPY = object()  # `_put`: copy the source key's tag


# --- small located-tree helpers ------------------------------------------------------------------

def _put(out: Map, key: str, value: Any, src: Map | None, src_key: str | None = None, tag: Any = _COPY) -> None:
    """Set `out[key]` with the locations of `src[src_key]`; tag copied, set, or cleared (None)."""
    out[key] = value
    k = key if src_key is None else src_key
    for mine, theirs in ((out.key_locs, None if src is None else src.key_locs),
                         (out.value_locs, None if src is None else src.value_locs)):
        if theirs is not None and k in theirs:
            mine[key] = theirs[k]
        else:
            mine.pop(key, None)
    if tag is _COPY:
        tag = src.tags.get(k) if src is not None else None
    if tag:
        out.tags[key] = tag
    else:
        out.tags.pop(key, None)


def _drop(out: Map, key: str) -> None:
    out.pop(key, None)
    out.key_locs.pop(key, None)
    out.value_locs.pop(key, None)
    out.tags.pop(key, None)


def _copy_map(m: Map, loc: Location | None = None) -> Map:
    out = Map(loc=loc or m.loc)
    for k, v in m.items():
        _put(out, k, v, m)
    return out


def _item_locs(seq: list) -> list[Location | None]:
    return [item_loc(seq, i) for i in range(len(seq))]


def _loc_of(parent: Any, key: str) -> Location | None:
    if isinstance(parent, Map):
        return parent.value_locs.get(key) or parent.key_locs.get(key)
    return None


def _matches(path: KeyPath, pattern: Pattern) -> bool:
    return len(path) == len(pattern) and all(p == "*" or p == k for k, p in zip(path, pattern))


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return "single value"


def _scalar_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- !reset ---------------------------------------------------------------------------------------

def strip_reset(tree: Map) -> Map:
    """Remove every key tagged `!reset` (recursively) and forget `!override` tags.

    In a single file `!reset` just means "unset" (compose-go drops those nodes while parsing) and
    `!override` has nothing to override. Use this on a file that is not merged with another one.
    """
    return _strip(tree)


def _strip(value: Any) -> Any:
    """`value` without `!reset` keys and merge tags; parts with neither are returned as they are
    (copy-on-write: a large tree with no tags costs one walk and no copies)."""
    if isinstance(value, Map):
        stripped = {k: _strip(v) for k, v in value.items() if value.tags.get(k) != RESET}
        if not value.tags and all(stripped[k] is v for k, v in value.items()):
            return value
        out = Map(loc=value.loc)
        for k, v in stripped.items():
            _put(out, k, v, value, tag=None)
        return out
    if isinstance(value, list):
        items = [_strip(v) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return Seq(items, loc=getattr(value, "loc", None), item_locs=_item_locs(value))
    return value


# --- the merge engine -----------------------------------------------------------------------------

class _Merger:
    """Merges `over` onto `base` by compose's rules. Never mutates its inputs.

    `keep_tags` is for `extends`: the override's `!reset`/`!override` keys stay in the result, tagged,
    so that merging the file with an earlier `-f` file applies them there too.
    """

    def __init__(self, *, keep_tags: bool):
        self.keep_tags = keep_tags
        self.problems: list[Problem] = []

    def take(self, value: Any) -> Any:
        """An override value used whole: its nested `!reset` keys mean "unset" unless kept for later."""
        return value if self.keep_tags else _strip(value)

    def merge(self, base: Any, over: Any, path: KeyPath, bl: Location | None, ol: Location | None
              ) -> tuple[Any, bool]:
        """The merged value and whether it is the override's own value (for its locations)."""
        for pattern, special in _SPECIALS:
            if _matches(path, pattern):
                return special(self, base, over, path, bl, ol)
        return self.default(base, over, path, bl, ol)

    def default(self, base: Any, over: Any, path: KeyPath, bl: Location | None, ol: Location | None
                ) -> tuple[Any, bool]:
        if over is None:  # an empty override value (`key:`) keeps the base (compose-go mergeYaml)
            return base, False
        if isinstance(base, Map):
            if isinstance(over, Map):
                return self.mapping(base, over, path), False
            return self.mismatch(base, over, path, bl, ol)
        if isinstance(base, list):
            if isinstance(over, list):
                return self.append(base, over), False
            return self.mismatch(base, over, path, bl, ol)
        return self.take(over), True

    def mapping(self, base: Map, over: Map, path: KeyPath) -> Map:
        out = _copy_map(base)
        for k, v in over.items():
            tag = over.tags.get(k)
            if tag == RESET:
                self.reset(out, k, v, over)
                continue
            if tag == OVERRIDE or k not in out:
                _put(out, k, self.take(v), over, tag=tag if self.keep_tags else None)
                continue
            merged, from_over = self.merge(out[k], v, path + (k,), _loc_of(out, k), _loc_of(over, k))
            if from_over:
                _put(out, k, merged, over, tag=None)
            else:  # a merged container stays where it was first defined
                out[k] = merged
        return out

    def assign(self, base: Map, over: Map) -> Map:
        """Key by key replacement (list-or-dict attributes): later values win, first position stays."""
        out = _copy_map(base)
        for k, v in over.items():
            tag = over.tags.get(k)
            if tag == RESET:
                self.reset(out, k, v, over)
                continue
            _put(out, k, self.take(v), over, tag=tag if self.keep_tags else None)
        return out

    def reset(self, out: Map, key: Any, value: Any, over: Map) -> None:
        """`key: !reset ...` unsets the key; under `extends` (keep_tags) the tagged key stays in
        the result so the merge with the including file still sees it."""
        _drop(out, key)
        if self.keep_tags:
            _put(out, key, value, over, tag=RESET)

    def append(self, base: list, over: list) -> Seq:
        return Seq(list(base) + [self.take(v) for v in over], loc=getattr(base, "loc", None),
                   item_locs=_item_locs(base) + _item_locs(over))

    def mismatch(self, base: Any, over: Any, path: KeyPath, bl: Location | None, ol: Location | None
                 ) -> tuple[Any, bool]:
        where = f" at {bl}" if bl else ""
        self.problems.append(Problem(f"cannot merge a {_kind(over)} into the {_kind(base)}{where}",
                                     path=path, location=ol or bl))
        return base, False


# Conversions the special rules use to bring both sides to one syntax. Each returns None when the
# value has neither syntax (then the default rules decide: scalar base -> override wins).

def _as_dict(value: Any) -> Map | None:
    """`[K=V, K]` -> `{K: V, K: None}` (compose's list syntax for environment, labels, ...)."""
    if isinstance(value, Map):
        return value
    if not isinstance(value, list):
        return None
    out = Map(loc=getattr(value, "loc", None))
    for i, item in enumerate(value):
        key, sep, val = _scalar_str(item).partition("=")
        loc = item_loc(value, i)
        out[key] = val if sep else None
        if loc:
            out.key_locs[key] = out.value_locs[key] = loc
    return out


def _as_list(value: Any, loc: Location | None) -> list | None:
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        return Seq([value], loc=loc, item_locs=[loc])
    return None


def _as_hosts(value: Any, loc: Location | None) -> list | None:
    """extra_hosts mapping syntax -> `host=ip` entries (one per address, as compose-go does)."""
    if isinstance(value, Map):
        items: list[str] = []
        locs: list[Location | None] = []
        for host, ips in value.items():
            where = value.value_locs.get(host) or value.key_locs.get(host)
            for ip in ips if isinstance(ips, list) else [ips]:
                items.append(f"{host}={_scalar_str(ip)}")
                locs.append(where)
        return Seq(items, loc=value.loc, item_locs=locs)
    return _as_list(value, loc)


def _as_build(value: Any, loc: Location | None) -> Map | None:
    if isinstance(value, Map):
        return value
    if isinstance(value, str):
        out = Map(loc=loc)
        out["context"] = value
        if loc:
            out.key_locs["context"] = out.value_locs["context"] = loc
        return out
    return None


def _as_mapping(value: Any, default: dict | None) -> Map | None:
    """`[a, b]` -> `{a: default, b: default}` (depends_on, networks, models)."""
    if isinstance(value, Map):
        return value
    if not isinstance(value, list):
        return None
    out = Map(loc=getattr(value, "loc", None))
    for i, name in enumerate(value):
        loc = item_loc(value, i)
        entry: Map | None = None
        if default is not None:
            entry = Map(loc=loc)
            for k, v in default.items():
                entry[k] = v
                if loc:
                    entry.key_locs[k] = entry.value_locs[k] = loc
        key = _scalar_str(name)
        out[key] = entry
        if loc:
            out.key_locs[key] = out.value_locs[key] = loc
    return out


def _converted(convert: Callable[[Any, Location | None], Any],
               combine: Callable[[_Merger, Any, Any, KeyPath], Any]):
    """A special rule: bring both sides to one syntax with `convert`, then `combine` them."""
    def rule(m: _Merger, base: Any, over: Any, path: KeyPath, bl: Location | None, ol: Location | None
             ) -> tuple[Any, bool]:
        if over is None:
            return base, False
        b, o = convert(base, bl), convert(over, ol)
        if b is None:
            return m.take(over), True
        if o is None:
            return m.mismatch(base, over, path, bl, ol)
        return combine(m, b, o, path), False
    return rule


def _combine_hosts(m: _Merger, base: list, over: list, path: KeyPath) -> Seq:
    # compose-go mergeExtraHosts: drop override entries the base already has, append the rest.
    keep = [i for i, v in enumerate(over) if v not in base]
    return Seq(list(base) + [over[i] for i in keep], loc=getattr(base, "loc", None),
               item_locs=_item_locs(base) + [item_loc(over, i) for i in keep])


def _replace(m: _Merger, base: Any, over: Any, path: KeyPath, bl: Location | None, ol: Location | None
             ) -> tuple[Any, bool]:
    return m.take(over), True


def _merge_logging(m: _Merger, base: Any, over: Any, path: KeyPath, bl: Location | None,
                   ol: Location | None) -> tuple[Any, bool]:
    # Options only make sense for their own driver: a different driver replaces the whole block.
    if isinstance(base, Map) and isinstance(over, Map) and "driver" in base and "driver" in over \
            and base["driver"] != over["driver"]:
        return m.take(over), True
    return m.default(base, over, path, bl, ol)


def _merge_ulimit(m: _Merger, base: Any, over: Any, path: KeyPath, bl: Location | None,
                  ol: Location | None) -> tuple[Any, bool]:
    # Two {soft, hard} mappings merge key by key; any other combination: the override wins.
    if isinstance(base, Map) and isinstance(over, Map):
        return m.mapping(base, over, path), False
    return m.take(over), True


def _merge_ipam_config(m: _Merger, base: Any, over: Any, path: KeyPath, bl: Location | None,
                       ol: Location | None) -> tuple[Any, bool]:
    """IPAM pools merge by `subnet`; pools with a new subnet are appended."""
    if over is None or not (isinstance(base, list) and isinstance(over, list)):
        return m.default(base, over, path, bl, ol)
    items, locs = list(base), _item_locs(base)
    for i, entry in enumerate(over):
        j = next((n for n, have in enumerate(items) if isinstance(have, Map) and isinstance(entry, Map)
                  and "subnet" in entry and have.get("subnet") == entry["subnet"]), None)
        if j is None:
            items.append(m.take(entry))
            locs.append(item_loc(over, i))
        else:
            items[j] = m.mapping(items[j], entry, path)
    return Seq(items, loc=getattr(base, "loc", None), item_locs=locs), False


_DEPENDS_ON_DEFAULT = {"condition": "service_started", "required": True}

_dict_like = _converted(lambda v, _loc: _as_dict(v), lambda m, b, o, _p: m.assign(b, o))
_to_sequence = _converted(_as_list, lambda m, b, o, _p: m.append(b, o))
_extra_hosts = _converted(_as_hosts, _combine_hosts)
_build = _converted(_as_build, lambda m, b, o, p: m.mapping(b, o, p))
_depends_on = _converted(lambda v, _loc: _as_mapping(v, _DEPENDS_ON_DEFAULT), lambda m, b, o, p: m.mapping(b, o, p))
_names = _converted(lambda v, _loc: _as_mapping(v, None), lambda m, b, o, p: m.mapping(b, o, p))


def _p(dotted: str) -> Pattern:
    return tuple(dotted.split("."))


# compose-go override/merge.go `mergeSpecials`, key by key. List-or-dict attributes are merged as
# mappings and come out in mapping syntax (compose-go appends `K=V` strings and de-duplicates them by
# key afterwards, which gives the same pairs in the same order).
_SPECIALS: list[tuple[Pattern, Callable[..., tuple[Any, bool]]]] = [
    (_p("networks.*.ipam.config"), _merge_ipam_config),
    (_p("networks.*.labels"), _dict_like),
    (_p("volumes.*.labels"), _dict_like),
    (_p("services.*.annotations"), _dict_like),
    (_p("services.*.build"), _build),
    (_p("services.*.build.args"), _dict_like),
    (_p("services.*.build.additional_contexts"), _dict_like),
    (_p("services.*.build.extra_hosts"), _extra_hosts),
    (_p("services.*.build.labels"), _dict_like),
    (_p("services.*.command"), _replace),
    (_p("services.*.depends_on"), _depends_on),
    (_p("services.*.deploy.labels"), _dict_like),
    (_p("services.*.dns"), _to_sequence),
    (_p("services.*.dns_opt"), _to_sequence),
    (_p("services.*.dns_search"), _to_sequence),
    (_p("services.*.entrypoint"), _replace),
    (_p("services.*.env_file"), _to_sequence),
    (_p("services.*.label_file"), _to_sequence),
    (_p("services.*.environment"), _dict_like),
    (_p("services.*.extra_hosts"), _extra_hosts),
    (_p("services.*.healthcheck.test"), _replace),
    (_p("services.*.labels"), _dict_like),
    (_p("services.*.logging"), _merge_logging),
    (_p("services.*.models"), _names),
    (_p("services.*.networks"), _names),
    (_p("services.*.sysctls"), _dict_like),
    (_p("services.*.tmpfs"), _to_sequence),
    (_p("services.*.ulimits.*"), _merge_ulimit),
]


# --- uniqueness of merged sequences (compose-go override/uncity.go) -------------------------------

def _key_value_index(v: Any) -> Any:
    return v.partition("=")[0] if isinstance(v, str) else None


def _exact_index(v: Any) -> Any:
    return v if isinstance(v, str) else None


def _expose_index(v: Any) -> Any:
    return None if isinstance(v, bool) or not isinstance(v, str | int) else str(v)


def _port_index(v: Any) -> Any:
    # Short syntax compares as written (like compose-go); long syntax by ip/published/target/protocol.
    if isinstance(v, bool):
        return None
    if isinstance(v, int | str):
        return str(v)
    if isinstance(v, Map) and "target" in v:
        published = v.get("published")
        return ("long", _scalar_str(v.get("host_ip", "0.0.0.0")),
                "" if published is None else _scalar_str(published), _scalar_str(v["target"]),
                _scalar_str(v.get("protocol", "tcp")))
    return None


def _volume_index(v: Any) -> Any:
    if isinstance(v, Map):
        target = v.get("target")
        return target if isinstance(target, str) else None
    if isinstance(v, str):
        parts = v.split(":")
        return parts[1] if len(parts) > 1 else parts[0]
    return None


def _device_index(v: Any) -> Any:
    if isinstance(v, Map):
        target = v.get("target", v.get("source"))  # no target: mapped at its source path
        return target if isinstance(target, str) else None
    if isinstance(v, str):
        parts = v.split(":")
        return parts[1] if len(parts) > 1 else parts[0]
    return None


def _mount_index(default_dir: str) -> Callable[[Any], Any]:
    def index(v: Any) -> Any:
        if isinstance(v, str):
            return f"{default_dir}/{v}"
        if isinstance(v, Map):
            target = v.get("target")
            if isinstance(target, str):
                return target if target.startswith("/") else f"{default_dir}/{target}"
            source = v.get("source")
            return f"{default_dir}/{source}" if isinstance(source, str) else None
        return None
    return index


def _env_file_index(v: Any) -> Any:
    if isinstance(v, Map):
        v = v.get("path")
    return v if isinstance(v, str) else None


_UNIQUE: list[tuple[Pattern, Callable[[Any], Any]]] = [
    *((_p(p), _key_value_index) for p in (
        "networks.*.labels", "networks.*.ipam.options", "configs.*.labels", "secrets.*.labels",
        "services.*.annotations", "services.*.build.args", "services.*.build.additional_contexts",
        "services.*.build.tags", "services.*.build.labels", "services.*.cap_add", "services.*.cap_drop",
        "services.*.deploy.labels", "services.*.dns", "services.*.dns_opt", "services.*.dns_search",
        "services.*.environment", "services.*.labels", "services.*.links", "services.*.networks.*.aliases",
        "services.*.networks.*.link_local_ips", "services.*.profiles", "services.*.sysctls",
        "services.*.tmpfs")),
    (_p("services.*.devices"), _device_index),
    (_p("services.*.configs"), _mount_index("")),
    (_p("services.*.secrets"), _mount_index("/run/secrets")),
    (_p("services.*.env_file"), _env_file_index),
    (_p("services.*.expose"), _expose_index),
    (_p("services.*.ports"), _port_index),
    (_p("services.*.volumes"), _volume_index),
    # Not in compose-go, which checks the schema per file; pysup validates the merged tree, where
    # an appended duplicate would break the schema's uniqueItems.
    *((_p(p), _exact_index) for p in (
        "services.*.group_add", "services.*.security_opt", "services.*.external_links",
        "services.*.volumes_from", "services.*.label_file", "services.*.extra_hosts",
        "services.*.build.extra_hosts", "services.*.device_cgroup_rules")),
]



def enforce_unicity(tree: Map) -> Map:
    """Drop re-definitions in sequences that compose keys by a unique value (ports, volumes by target,
    secrets by target, environment by name, ...): the later entry replaces the earlier one in place."""
    return _unique(tree, _UNIQUE_TRIE)


def _trie(patterns: Sequence[tuple[Pattern, Callable[[Any], Any]]]) -> dict:
    """Patterns as a tree of path parts ("*" for any key); the index function sits under None."""
    root: dict = {}
    for pattern, index in patterns:
        node = root
        for part in pattern:
            node = node.setdefault(part, {})
        node[None] = index
    return root


# _trie_child follows one branch: no level of these patterns holds both a named key and "*".
_UNIQUE_TRIE = _trie(_UNIQUE)


def _trie_child(trie: dict, key: str) -> dict | None:
    return trie.get(key) if key in trie else trie.get("*")


def _unique(value: Any, trie: dict) -> Any:
    """Only the paths some pattern can reach are walked; untouched parts are shared, not copied."""
    if isinstance(value, Map):
        changed = {}
        for k, v in value.items():
            sub = _trie_child(trie, k)
            if sub is not None:
                new = _unique(v, sub)
                if new is not v:
                    changed[k] = new
        if not changed:
            return value
        out = Map(loc=value.loc)
        for k, v in value.items():
            _put(out, k, changed.get(k, v), value)
        return out
    if isinstance(value, list) and None in trie:
        return _dedupe(value, trie[None])
    return value


def _dedupe(seq: list, index: Callable[[Any], Any]) -> Seq:
    items: list[Any] = []
    locs: list[Location | None] = []
    seen: dict[Any, int] = {}
    for i, entry in enumerate(seq):
        key = index(entry)
        if key is not None and key in seen:
            items[seen[key]] = entry
            locs[seen[key]] = item_loc(seq, i)
            continue
        if key is not None:
            seen[key] = len(items)
        items.append(entry)
        locs.append(item_loc(seq, i))
    return Seq(items, loc=getattr(seq, "loc", None), item_locs=locs)


# --- merging files --------------------------------------------------------------------------------

def merge_files(base: Map, override: Map) -> Map:
    """`-f base -f override`: compose's merge rules, then its uniqueness rules. Inputs are untouched.

    Locations: a value taken from the override points at the override file; a merged mapping keeps the
    location of its first definition; list items keep their own. A mapping merged with a list (or a
    list with a single value) is a located SpecError.
    """
    merger = _Merger(keep_tags=False)
    merged = merger.mapping(_strip(base), override, ())
    if merger.problems:
        raise SpecError(merger.problems)
    return enforce_unicity(merged)


def merge_all(trees: Sequence[Map]) -> Map:
    """Fold `merge_files` over the trees of all `-f` files (one tree: just strip its `!reset` keys)."""
    if not trees:
        raise ValueError("merge_all needs at least one tree")
    result = enforce_unicity(_strip(trees[0]))
    for tree in trees[1:]:
        result = merge_files(result, tree)
    return result


# --- relative paths from another directory --------------------------------------------------------

_REMOTE_PREFIXES = ("https://", "http://", "git://", "ssh://", "github.com/", "git@")


def _abs(path: str, base_dir: str) -> str:
    """Relative -> absolute under `base_dir`. `~` paths are left for the later path resolution, which
    expands them the same way wherever they were written."""
    if os.path.isabs(path) or path.startswith("~"):
        return path
    return os.path.normpath(os.path.join(base_dir, path))


def _abs_context(path: str, base_dir: str) -> str:
    # Build contexts can be URLs, `service:x` or `docker-image://x` (compose-go absContextPath).
    if "://" in path or path.startswith("service:") or path.startswith(_REMOTE_PREFIXES):
        return path
    return _abs(path, base_dir)


def _rebase_value(container: Map, key: str, fn: Callable[[Any], Any]) -> None:
    if key in container:
        container[key] = fn(container[key])


def _rebase_list(value: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(value, list):
        return Seq([fn(v) for v in value], loc=getattr(value, "loc", None), item_locs=_item_locs(value))
    return fn(value)


def _rebase_volume(entry: Any, base_dir: str) -> Any:
    if isinstance(entry, str):
        # Short syntax: a source starting with `.` is a relative bind path; a bare name is a named
        # volume, `/` and `~` need no base (compose-go format.ParseVolume isFilePath).
        source, sep, rest = entry.partition(":")
        if sep and source.startswith("."):
            return f"{_abs(source, base_dir)}:{rest}"
        return entry
    if isinstance(entry, Map) and entry.get("type") == "bind" and isinstance(entry.get("source"), str):
        out = _copy_map(entry)
        out["source"] = _abs(entry["source"], base_dir)
        return out
    return entry


def _rebase_build(build: Any, base_dir: str) -> Any:
    if isinstance(build, str):
        return _abs_context(build, base_dir)
    if not isinstance(build, Map):
        return build
    out = _copy_map(build)
    if isinstance(out.get("context"), str):
        out["context"] = _abs_context(out["context"], base_dir)
    elif "context" not in out:
        # The default context "." means the directory of the file that wrote the build section.
        out["context"] = base_dir
        if build.loc:
            out.key_locs["context"] = out.value_locs["context"] = build.loc
    extra = out.get("additional_contexts")
    if isinstance(extra, Map):
        ctx = _copy_map(extra)
        for k, v in extra.items():
            if isinstance(v, str):
                ctx[k] = _abs_context(v, base_dir)
        out["additional_contexts"] = ctx
    elif isinstance(extra, list):
        def one(item: Any) -> Any:
            if isinstance(item, str) and "=" in item:
                name, _, where = item.partition("=")
                return f"{name}={_abs_context(where, base_dir)}"
            return item
        out["additional_contexts"] = _rebase_list(extra, one)
    return out


def _rebase_service(service: Any, base_dir: str) -> Any:
    """Make the relative paths of one service definition absolute under `base_dir`."""
    if not isinstance(service, Map):
        return service
    out = _copy_map(service)

    def path(v: Any) -> Any:
        return _abs(v, base_dir) if isinstance(v, str) else v

    def env_file(v: Any) -> Any:
        if isinstance(v, Map) and isinstance(v.get("path"), str):
            entry = _copy_map(v)
            entry["path"] = _abs(v["path"], base_dir)
            return entry
        return path(v)

    _rebase_value(out, "build", lambda v: _rebase_build(v, base_dir))
    _rebase_value(out, "env_file", lambda v: _rebase_list(v, env_file))
    _rebase_value(out, "label_file", lambda v: _rebase_list(v, path))
    _rebase_value(out, "volumes", lambda v: _rebase_list(v, lambda e: _rebase_volume(e, base_dir)))
    if isinstance(out.get("extends"), Map) and isinstance(out["extends"].get("file"), str):
        ext = _copy_map(out["extends"])
        ext["file"] = _abs(ext["file"], base_dir)
        out["extends"] = ext
    if isinstance(out.get("x-pysup"), Map) and isinstance(out["x-pysup"].get("rootfs"), str):
        ext = _copy_map(out["x-pysup"])
        ext["rootfs"] = _abs(ext["rootfs"], base_dir)
        out["x-pysup"] = ext
    develop = out.get("develop")
    if isinstance(develop, Map) and isinstance(develop.get("watch"), list):
        def watch(rule: Any) -> Any:
            if isinstance(rule, Map) and isinstance(rule.get("path"), str):
                rule = _copy_map(rule)
                rule["path"] = _abs(rule["path"], base_dir)
            return rule
        develop = _copy_map(develop)
        develop["watch"] = _rebase_list(develop["watch"], watch)
        out["develop"] = develop
    return out


def rebase_paths(tree: Map, base_dir: str) -> Map:
    """Make the relative paths of a whole project tree absolute under `base_dir` (already absolute
    paths are unchanged, so this is idempotent).

    Covers what compose-go `paths/resolve.go` covers (build context and additional contexts, env_file,
    extends.file, develop.watch path, bind-mount sources, configs/secrets `file`, local bind volumes'
    `device`) plus `label_file` and pysup's `x-pysup.rootfs`.
    """
    out = _copy_map(tree)
    services = tree.get("services")
    if isinstance(services, Map):
        rebased = Map(loc=services.loc)
        for name, svc in services.items():
            _put(rebased, name, _rebase_service(svc, base_dir), services)
        out["services"] = rebased
    for kind in ("configs", "secrets"):
        section = tree.get(kind)
        if isinstance(section, Map):
            rebased = _copy_map(section)
            for name, res in section.items():
                if isinstance(res, Map) and isinstance(res.get("file"), str):
                    res = _copy_map(res)
                    res["file"] = _abs(res["file"], base_dir)
                    rebased[name] = res
            out[kind] = rebased
    volumes = tree.get("volumes")
    if isinstance(volumes, Map):
        rebased = _copy_map(volumes)
        for name, vol in volumes.items():
            # A local volume with `o: bind` is a bind mount of `device` (compose-go volumeDriverOpts).
            opts = vol.get("driver_opts") if isinstance(vol, Map) else None
            if isinstance(opts, Map) and vol.get("driver", "local") == "local" and opts.get("o") == "bind" \
                    and isinstance(opts.get("device"), str):
                vol = _copy_map(vol)
                opts = _copy_map(opts)
                opts["device"] = _abs(opts["device"], base_dir)
                vol["driver_opts"] = opts
                rebased[name] = vol
        out["volumes"] = rebased
    return out


# --- extends --------------------------------------------------------------------------------------

class _Failed(Exception):
    """A service could not be resolved; its problems are already recorded."""


class _Extends:
    """One `resolve_extends` run. Services are keyed by (absolute file, name), so a chain that leaves
    the file and comes back is still seen as a cycle; other files are loaded and rebased once."""

    def __init__(self, root_file: str, root: Map, load: LoadFile, base_dir: str):
        self.root_file = root_file
        self.root_dir = os.path.dirname(root_file)
        self.load = load
        self.dirs = {root_file: base_dir}
        self.files: dict[str, Any] = {root_file: root.get("services")}
        self.done: dict[tuple[str, str], Any] = {}
        self.failed: set[tuple[str, str]] = set()
        self.problems: list[Problem] = []

    def fail(self, message: str, path: KeyPath, location: Location | None) -> _Failed:
        self.problems.append(Problem(message, path=path, location=location))
        return _Failed()

    def services_of(self, file: str, ext: Map, at: KeyPath) -> Map:
        """The (rebased) services of another file, loaded once."""
        if file not in self.files:
            try:
                tree = self.load(file)
            except SpecError as exc:
                # "no such file" and the like carry no position: say which extends named the file.
                for p in exc.problems:
                    if p.location is None:
                        self.problems.append(Problem(f'cannot read extends file "{ext["file"]}": {p.message}',
                                                     path=at + ("file",), location=_loc_of(ext, "file")))
                    else:
                        self.problems.append(p)
                raise _Failed() from None
            self.dirs[file] = os.path.dirname(file)
            self.files[file] = rebase_paths(tree, self.dirs[file]).get("services")
        services = self.files[file]
        if not isinstance(services, Map):
            raise self.fail(f'extends file "{ext["file"]}" has no services', at + ("file",), _loc_of(ext, "file"))
        return services

    def resolve(self, file: str, services: Map, name: str, stack: tuple[tuple[str, str], ...]) -> Any:
        me = (file, name)
        if me in self.done:
            return self.done[me]
        if me in self.failed:
            raise _Failed()
        if me in stack:
            raise self.cycle(stack[stack.index(me):] + (me,))
        try:
            result = self._resolve(file, services, name, stack + (me,))
        except _Failed:
            self.failed.add(me)
            raise
        self.done[me] = result
        return result

    def _resolve(self, file: str, services: Map, name: str, stack: tuple[tuple[str, str], ...]) -> Any:
        service = services[name]
        if not isinstance(service, Map) or "extends" not in service:
            return service
        at: KeyPath = ("services", name, "extends")
        ext = service["extends"]
        other_file: str | None = None
        if isinstance(ext, str):
            ref, ref_loc = ext, _loc_of(service, "extends")
        elif isinstance(ext, Map) and isinstance(ext.get("service"), str):
            ref, ref_loc = ext["service"], _loc_of(ext, "service")
            other = ext.get("file")
            if other is not None and not isinstance(other, str):
                raise self.fail("extends file must be a path", at + ("file",), _loc_of(ext, "file"))
            if other is not None:
                other_file = os.path.normpath(os.path.join(self.dirs[file], os.path.expanduser(other)))
        else:
            raise self.fail('extends must be a service name or a mapping with a "service" name', at,
                            _loc_of(service, "extends"))

        if other_file is None or other_file == file:
            ref_file, ref_services = file, services
        else:
            ref_file, ref_services = other_file, self.services_of(other_file, ext, at)
        if ref not in ref_services:
            where = "" if ref_file == file else f' file "{ext["file"]}"'
            raise self.fail(f'unknown service "{ref}" in extends{where}',
                            at + (("service",) if isinstance(ext, Map) else ()), ref_loc)

        base = self.resolve(ref_file, ref_services, ref, stack)
        if base is None:
            base = Map(loc=service.loc)
        if not isinstance(base, Map):
            raise self.fail(f'service "{ref}" named in extends is not a mapping', at, ref_loc)
        own = Map(loc=service.loc)
        for k, v in service.items():
            if k != "extends":
                _put(own, k, v, service)
        merger = _Merger(keep_tags=True)
        merged = merger.mapping(_strip(base), own, ("services", name))
        merged.loc = service.loc
        if merger.problems:
            self.problems.extend(merger.problems)
            raise _Failed()
        return merged

    def cycle(self, chain: tuple[tuple[str, str], ...]) -> _Failed:
        start_file, start = chain[0]
        names = []
        for f, n in chain:
            names.append(n if f == start_file else f"{n} ({os.path.relpath(f, self.root_dir)})")
        services = self.files.get(start_file)
        loc = _loc_of(services[start], "extends") if isinstance(services, Map) and \
            isinstance(services.get(start), Map) else None
        return self.fail(f"circular extends: {' -> '.join(names)}", ("services", start, "extends"), loc)


def resolve_extends(tree: Map, *, file: str, load: LoadFile, base_dir: str | None = None) -> Map:
    """Resolve `extends` in every service of one file, recursively, the way compose-go does.

    The extending service is merged on top of its (resolved) base with the `-f` merge rules, its
    `!reset`/`!override` keys applying to the base (and kept tagged in the result: see the module doc).
    Like compose v2 (not v1), `depends_on`, `links`, `volumes_from` and the rest are inherited; the
    resources they name are not imported.

    `load(path)` returns the interpolated tree of another file; it gets an absolute path, resolved from
    `base_dir` (default: the directory of `file`) or from the directory of the other file that names
    it. Services taken from another file have their relative paths rebased to that file's directory
    (`rebase_paths`). Services of this file keep theirs. Problems (unknown service or file, circular
    extends, unmergeable values) are collected and raised as one located SpecError.
    """
    services = tree.get("services")
    if not isinstance(services, Map):
        return tree
    root_file = os.path.abspath(file)
    ext = _Extends(root_file, tree, load, os.path.abspath(base_dir) if base_dir else os.path.dirname(root_file))
    resolved = Map(loc=services.loc)
    for name in services:
        try:
            value = ext.resolve(root_file, services, name, ())
        except _Failed:
            value = services[name]
        _put(resolved, name, value, services)
    if ext.problems:
        raise SpecError(ext.problems)
    out = _copy_map(tree)
    out["services"] = resolved
    return out


# --- include --------------------------------------------------------------------------------------

# The files being included right now, outermost first. `load_project` runs resolve_include again for
# the included files, so the chain has to travel past the callback: a context variable does that
# without adding an argument the callback would have to pass along.
_INCLUDING: ContextVar[tuple[str, ...]] = ContextVar("pysup_including", default=())

RESOURCES = ("services", "networks", "volumes", "secrets", "configs", "models")
_SINGULAR = {"services": "service", "networks": "network", "volumes": "volume", "secrets": "secret",
             "configs": "config", "models": "model"}


def _str_list(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _where(loc: Location | None) -> str:
    return str(loc) if loc else "an included file"


def resolve_include(tree: Map, *, file: str, load_project: LoadProject, base_dir: str | None = None) -> Map:
    """Load the projects named in the top-level `include` and add their resources to this tree.

    Each entry (short: a path; long: `{path, project_directory, env_file}`) is handed to
    `load_project(paths, project_directory, env_files)` with absolute paths: `paths` resolved from
    `base_dir` (default: the directory of `file`), `project_directory` the given one or the directory
    of the first path, `env_files` the given ones (`/dev/null` entries dropped: "no env file") or None
    when the entry names none (the callback then uses `<project_directory>/.env` if it exists).

    The callback reads, interpolates (with that environment) and resolves the included files' own
    `extends`/`include` and merges them, and returns one tree. THIS function then rebases the relative
    paths of that tree to the project directory (`rebase_paths`; harmless if the callback did it too)
    and strips leftover `!reset` keys.

    Resources (services, networks, volumes, secrets, configs, models) are copied in. A name defined
    here and in an included project, or in two included projects, is an error naming both places,
    unless both definitions are the same (compose-go `importResource`). An include cycle is an error.
    """
    if "include" not in tree:
        return tree
    file_abs = os.path.abspath(file)
    here = os.path.abspath(base_dir) if base_dir else os.path.dirname(file_abs)
    chain = _INCLUDING.get()
    if not chain or chain[-1] != file_abs:
        chain = chain + (file_abs,)
    out = Map(loc=tree.loc)
    for k, v in tree.items():
        if k != "include":
            _put(out, k, v, tree)
    entries = tree["include"]
    problems: list[Problem] = []
    if entries is None:
        return out
    if not isinstance(entries, list):
        raise SpecError(Problem("include must be a list of files or of {path, project_directory, env_file}",
                                path=("include",), location=_loc_of(tree, "include")))
    for i, entry in enumerate(entries):
        at: KeyPath = ("include", i)
        loc = item_loc(entries, i)
        try:
            imported = _load_include(entry, at, loc, here, chain, load_project)
        except SpecError as exc:
            problems.extend(exc.problems)
            continue
        problems.extend(_import(out, imported))
    if problems:
        raise SpecError(problems)
    return out


def _load_include(entry: Any, at: KeyPath, loc: Location | None, here: str, chain: tuple[str, ...],
                  load_project: LoadProject) -> Map:
    project_dir: str | None = None
    env_files: list[str] | None = None
    if isinstance(entry, str):
        paths = [entry]
    elif isinstance(entry, Map):
        paths = _str_list(entry.get("path"))
        if paths is None:
            raise SpecError(Problem('an include entry needs "path": a file or a list of files',
                                    path=at, location=_loc_of(entry, "path") or loc))
        if entry.get("project_directory") is not None:
            if not isinstance(entry["project_directory"], str):
                raise SpecError(Problem("project_directory must be a path", path=at + ("project_directory",),
                                        location=_loc_of(entry, "project_directory")))
            project_dir = _abs(os.path.expanduser(entry["project_directory"]), here)
        if entry.get("env_file") is not None:
            given = _str_list(entry["env_file"])
            if given is None:
                raise SpecError(Problem("env_file must be a file or a list of files", path=at + ("env_file",),
                                        location=_loc_of(entry, "env_file")))
            env_files = [_abs(os.path.expanduser(f), here) for f in given if f != "/dev/null"]
    else:
        raise SpecError(Problem("an include entry must be a file or a mapping with a path",
                                path=at, location=loc))
    files = [_abs(os.path.expanduser(p), here) for p in paths]
    project_dir = project_dir or os.path.dirname(files[0])
    for f in files:
        if f in chain:
            start = os.path.dirname(chain[0])
            shown = " -> ".join(os.path.relpath(c, start) for c in (*chain, f))
            raise SpecError(Problem(f"include cycle: {shown}", path=at, location=loc))
    token = _INCLUDING.set(chain)
    try:
        imported = load_project(files, project_dir, env_files)
    except SpecError as exc:
        # A missing or unreadable file has no position in it: point at the include entry as well.
        raise SpecError([p if p.location else
                         Problem(f'cannot include "{p.file or paths[0]}": {p.message}', path=at, location=loc)
                         for p in exc.problems]) from None
    finally:
        _INCLUDING.reset(token)
    return rebase_paths(_strip(imported), project_dir)


def _import(out: Map, imported: Map) -> list[Problem]:
    problems: list[Problem] = []
    for kind in RESOURCES:
        theirs = imported.get(kind)
        if not isinstance(theirs, Map):
            continue
        mine = out.get(kind)
        merged = _copy_map(mine) if isinstance(mine, Map) else Map(loc=theirs.loc)
        for name, definition in theirs.items():
            if name not in merged:
                _put(merged, name, definition, theirs)
            elif merged[name] != definition:
                problems.append(Problem(
                    f'{_SINGULAR[kind]} "{name}" is also defined in {_where(theirs.key_locs.get(name))}; '
                    f"an included {_SINGULAR[kind]} cannot be redefined",
                    path=(kind, name), location=merged.key_locs.get(name)))
        if kind in out:  # keeps the location of this file's (possibly empty) section
            out[kind] = merged
        else:
            _put(out, kind, merged, imported)
    return problems


__all__ = [
    "enforce_unicity", "merge_all", "merge_files", "rebase_paths", "resolve_extends", "resolve_include",
    "strip_reset",
]
