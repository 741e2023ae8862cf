"""The YAML reader: YAML 1.2 scalars, located data, and the refusals (duplicates, bombs, ...)."""

import pytest
from hypothesis import given, strategies as st

from supervisor.config.source import Map, Seq, locate, locate_key, parse_yaml, read_yaml
from supervisor.errors import Location, SpecError


def error_of(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_yaml(text, "s.yaml")
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("v: no", "no"),  # YAML 1.1 would make these booleans; Compose (YAML 1.2) keeps strings
        ("v: yes", "yes"),
        ("v: on", "on"),
        ("v: 22:22", "22:22"),  # YAML 1.1 sexagesimal: 1342
        ("v: 010", 8),  # go-yaml v3 keeps YAML 1.1 octals
        ("v: 0440", 0o440),
        ("v: 089", 89),
        ("v: 0o17", 15),
        ("v: 0x1f", 31),
        ("v: 1_000", 1000),  # go-yaml v3 drops underscores before Go's ParseInt
        ("v: 0b101", 5),
        ("v: -0x10", -16),
        ("v: 0x", "0x"),
        ("v: true", True),
        ("v: False", False),
        ("v: ~", None),
        ("v:", None),
        ("v: 1.5", 1.5),
        ("v: .inf", float("inf")),
        ("v: '1'", "1"),
        ("v: !!str 5", "5"),
        ("v: 2001-12-14", "2001-12-14"),
    ],
)
def test_yaml_12_scalars(text, value):
    assert parse_yaml(text, "s.yaml")["v"] == value


def test_keys_are_strings():
    tree = parse_yaml("1: a\ntrue: b\nno: c\n", "s.yaml")
    assert list(tree) == ["1", "true", "no"]


def test_locations_of_keys_values_and_items():
    tree = parse_yaml("services:\n  web:\n    ports:\n      - 80\n      - \"8080:80\"\n", "s.yaml")
    assert isinstance(tree, Map) and isinstance(tree["services"]["web"]["ports"], Seq)
    assert locate(tree, ("services", "web", "ports", 1)) == Location("s.yaml", 5, 9)
    assert locate_key(tree, ("services", "web", "ports")) == Location("s.yaml", 3, 5)
    # a missing key falls back to its nearest existing parent
    assert locate(tree, ("services", "web", "image")) == Location("s.yaml", 3, 5)


def test_merge_keys_explicit_keys_win_and_keep_locations():
    tree = parse_yaml(
        "x: &base\n  image: a\n  restart: always\ny: &more\n  user: u\nweb:\n  <<: [*base, *more]\n  image: b\n",
        "s.yaml",
    )
    assert tree["web"] == {"image": "b", "restart": "always", "user": "u"}
    assert locate(tree, ("web", "restart")) == Location("s.yaml", 3, 12)
    assert locate(tree, ("web", "image")) == Location("s.yaml", 8, 10)


def test_merge_earlier_source_wins():
    tree = parse_yaml("a: &a {k: 1}\nb: &b {k: 2}\nc:\n  <<: [*a, *b]\n", "s.yaml")
    assert tree["c"]["k"] == 1


def test_reset_and_override_tags_are_recorded():
    tree = parse_yaml("web:\n  ports: !reset []\n  env: !override {A: 1}\n  image: !reset\n", "s.yaml")
    assert tree["web"].tags == {"ports": "reset", "env": "override", "image": "reset"}
    assert tree["web"]["image"] is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\nb: 2\na: 3\n", "s.yaml:3:1: duplicate key 'a' (first defined at line 1)"),
        ("s:\n  web: {}\n  web: {}\n", "s.yaml:3:3: duplicate key 'web' (first defined at line 2)"),
        ("a: 1\n---\nb: 2\n", "s.yaml:2:1: a spec file holds one YAML document; found another after '---'"),
        ("", "s.yaml: the file is empty: a spec needs at least a 'services' mapping"),
        ("# only a comment\n", "s.yaml: the file is empty: a spec needs at least a 'services' mapping"),
        ("- a\n", "s.yaml:1:1: the top level must be a mapping of keys (services, networks, ...), not a list"),
        ("hello\n", "s.yaml:1:1: the top level must be a mapping of keys (services, networks, ...), not a single value"),
        ("a: [1, 2\n", "s.yaml:2:1: invalid YAML: while parsing a flow sequence, expected ',' or ']', but got '<stream end>'"),
        ("a: *nope\n", "s.yaml:1:4: found undefined alias 'nope'"),
        ("? [a]\n: 1\n", "s.yaml:1:3: a mapping key must be a plain value, not a list or mapping"),
        ("a: [!reset 1]\n", "s.yaml:1:5: !reset is only allowed on a mapping value, not on a sequence item"),
        ("a: !custom 1\n", "s.yaml:1:4: unsupported YAML tag !custom"),
        ("a: &x 1\nb:\n  <<: *x\n", "s.yaml:1:4: a << merge key needs a mapping or a list of mappings"),
        ("a:\n\tb: 1\n", "s.yaml:2:1: invalid YAML: while scanning for the next token, found character '\\t' that cannot start any token"),
    ],
)
def test_refusals(text, message):
    assert error_of(text) == message


def test_alias_bomb_is_refused_quickly():
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    assert "alias bomb" in error_of("\n".join(lines))


def test_shared_aliases_below_the_cap_load():
    text = "a: &a {k: [1, 2, 3]}\n" + "".join(f"s{i}: *a\n" for i in range(1000))
    assert parse_yaml(text, "s.yaml")["s999"] == {"k": [1, 2, 3]}


def test_read_yaml_errors(tmp_path):
    with pytest.raises(SpecError, match="nope.yaml: no such file"):
        read_yaml(str(tmp_path / "nope.yaml"), "nope.yaml")
    with pytest.raises(SpecError, match="is a directory"):
        read_yaml(str(tmp_path))
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"a: \xe9\n")
    with pytest.raises(SpecError, match=r"not UTF-8 text \(byte 3\)"):
        read_yaml(str(bad))
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: " + b"x" * (8 * 1024 * 1024) + b"\n")
    with pytest.raises(SpecError, match="larger than 8 MiB"):
        read_yaml(str(big))


def test_bom_is_accepted(tmp_path):
    f = tmp_path / "bom.yaml"
    f.write_bytes("\ufeffa: 1\n".encode())
    assert read_yaml(str(f)) == {"a": 1}


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"])),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(min_size=1, max_size=8, alphabet="abcxyz_"), children, max_size=4),
    max_leaves=20,
))
def test_json_compatible_documents_round_trip(value):
    import json
    assert parse_yaml(json.dumps({"v": value}), "s.yaml") == {"v": value}


@pytest.mark.parametrize("depth", [150, 5000])
def test_deep_nesting_is_refused_not_a_crash(depth):
    assert "nesting is deeper than 100 levels" in error_of("a: " + "[" * depth + "]" * depth)
