"""Variable interpolation, case for case against compose-go's template tests, then over a tree."""

import pytest
from hypothesis import given, strategies as st

from supervisor.config.interpolate import (
    InterpolationError,
    interpolate,
    interpolate_string,
    interpolate_with_warnings,
)
from supervisor.config.source import Map, Seq, parse_yaml
from supervisor.errors import Location, SpecError

# compose-go's template_test.go mapping: FOO is set, BAR is set but empty, anything else is unset.
ENV = {"FOO": "first", "BAR": ""}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # plain text and escapes
        ("foo", "foo"),
        ("$${foo}", "${foo}"),
        ("$$FOO", "$FOO"),
        ("$$$FOO", "$first"),
        ("a $ string", "a $ string"),  # a `$` that starts nothing stays as is
        ("^REGEX$", "^REGEX$"),
        ("$}", "$}"),
        ("$", "$"),
        ("$1", "$1"),
        ("cost: 5$", "cost: 5$"),
        # lookups
        ("This $FOO var", "This first var"),
        ("This ${FOO} var", "This first var"),
        ("This ${missing} var", "This  var"),
        ("This ${BAR} var", "This  var"),
        ("$FOO-bar", "first-bar"),  # docker/compose#8601: `-` ends an unbraced name
        ("$FOO.bar", "first.bar"),
        ("${FOO}${FOO}", "firstfirst"),
        ("$foo", ""),  # names are case-sensitive
        ("${_x1}", ""),
        # defaults
        ("ok ${missing:-def}", "ok def"),
        ("ok ${missing-def}", "ok def"),
        ("ok ${BAR:-def}", "ok def"),
        ("ok ${FOO:-def}", "ok first"),
        ("ok ${BAR-def}", "ok "),
        ("ok ${BAR:-/non:-alphanumeric}", "ok /non:-alphanumeric"),
        ("${missing:-}", ""),
        ("${missing:-a b  c}", "a b  c"),
        ("${missing:-{x}}", "{x}"),
        ('${missing:-{"k": 1}}', '{"k": 1}'),
        ("${missing:-x} and ${FOO}", "x and first"),
        ("${missing:-x}}", "x}"),
        # alternatives
        ("ok ${UNSET_VAR:+presence_value}", "ok "),
        ("ok ${UNSET_VAR+presence_value}", "ok "),
        ("ok ${FOO:+presence_value}", "ok presence_value"),
        ("ok ${FOO+presence_value}", "ok presence_value"),
        ("ok ${BAR+presence_value}", "ok presence_value"),
        ("ok ${BAR:+presence_value}", "ok "),
        # required, when satisfied
        ("ok ${FOO:?err}", "ok first"),
        ("ok ${FOO?err}", "ok first"),
        ("ok ${BAR?err}", "ok "),
        ("${FOO?bar-baz}", "first"),
        # operators in the surrounding text do not matter (TestInterpolationExternalInterference)
        ("-ok ${BAR:-defaultValue}", "-ok defaultValue"),
        ("+ok ${UNSET:-${BAR-defaultValue}}", "+ok "),
        ("-ok ${FOO:-defaultValue}", "-ok first"),
        (":-ok ${UNSET-defaultValue}", ":-ok defaultValue"),
        (":-ok ${BAR-defaultValue}", ":-ok "),
        (":?ok ${BAR-defaultValue}", ":?ok "),
        (":?ok ${BAR:-defaultValue}", ":?ok defaultValue"),
        (":+ok ${BAR:-defaultValue}", ":+ok defaultValue"),
        ("+ok ${BAR-defaultValue}", "+ok "),
        ("?ok ${BAR:-defaultValue}", "?ok defaultValue"),
        # the first operator after the name wins (TestPrecedence)
        ("${UNSET_VAR-myerror?msg}", "myerror?msg"),
        ("${UNSET_VAR:-a:?b}", "a:?b"),
        ("${UNSET_VAR-a:-b}", "a:-b"),
        # nesting (TestDefaultsWithNestedExpansion)
        ("ok ${UNSET_VAR-$FOO}", "ok first"),
        ("ok ${UNSET_VAR-${FOO}}", "ok first"),
        ("ok ${UNSET_VAR-${FOO} ${FOO}}", "ok first first"),
        ("ok ${BAR:-$FOO}", "ok first"),
        ("ok ${BAR:-${FOO}}", "ok first"),
        ("ok ${BAR:-${FOO} ${FOO}}", "ok first first"),
        ("ok ${BAR+$FOO}", "ok first"),
        ("ok ${BAR+$FOO ${FOO:+second}}", "ok first second"),
        ("${A:-${B:-x}}", "x"),
        ("${A:-${B:-${FOO}}}", "first"),
        ("${A:-$${B}}", "${B}"),
        ("${A:-$${B}", "${B"),  # compose accepts this one: `$$` hides the inner `${`
        # compose-go's named mappings are off in compose: kept as written
        ("${foo[bar]}", "${foo[bar]}"),
        # multi-line values: the default stops at the end of its line
        ("${missing:-a}\n${FOO}", "a\nfirst"),
    ],
)
def test_substitution(template, expected):
    assert interpolate_string(template, ENV) == expected


@pytest.mark.parametrize(
    "template",
    ["${", "${}", "${ }", "${ foo}", "${foo }", "${foo!}", "${foo:x}", "${FOO", "a ${FOO:-x} ${", "${A:-${B}",
     "${A:-${}}", "${1}", "${A\n}", "ok ${missing:-x} ${"],
)
def test_invalid_templates(template):
    with pytest.raises(InterpolationError) as info:
        interpolate_string(template, ENV)
    assert str(info.value).startswith(f"invalid interpolation format {_q(template)}")
    assert info.value.variable is None


def _q(text):
    return '"' + text.replace("\n", "\\n") + '"'


@pytest.mark.parametrize(
    ("template", "message", "variable"),
    [
        ("not ok ${UNSET_VAR:?Mandatory Variable Unset}",
         'required variable "UNSET_VAR" is missing a value: Mandatory Variable Unset', "UNSET_VAR"),
        ("not ok ${BAR:?Mandatory Variable Empty}",
         'required variable "BAR" is missing a value: Mandatory Variable Empty', "BAR"),
        ("not ok ${UNSET_VAR:?}", 'required variable "UNSET_VAR" is missing a value', "UNSET_VAR"),
        ("not ok ${UNSET_VAR?Mandatory Variable Unset}",
         'required variable "UNSET_VAR" is missing a value: Mandatory Variable Unset', "UNSET_VAR"),
        ("not ok ${UNSET_VAR?}", 'required variable "UNSET_VAR" is missing a value', "UNSET_VAR"),
        ("${UNSET_VAR?bar-baz}", 'required variable "UNSET_VAR" is missing a value: bar-baz', "UNSET_VAR"),
        ("not ok ${UNSET_VAR:?Mandatory Variable ${FOO}}",
         'required variable "UNSET_VAR" is missing a value: Mandatory Variable first', "UNSET_VAR"),
        ("not ok ${UNSET_VAR?Mandatory Variable ${FOO}}",
         'required variable "UNSET_VAR" is missing a value: Mandatory Variable first', "UNSET_VAR"),
        ("${A:-${DB:?set DB}}", 'required variable "DB" is missing a value: set DB', "DB"),
        # compose interpolates a default before deciding to use it, so this fails even though FOO is set
        ("${FOO:-${DB:?set DB}}", 'required variable "DB" is missing a value: set DB', "DB"),
        ("${FOO} then ${DB:?x}", 'required variable "DB" is missing a value: x', "DB"),
    ],
)
def test_required_variables(template, message, variable):
    with pytest.raises(InterpolationError) as info:
        interpolate_string(template, ENV)
    assert str(info.value) == message
    assert info.value.variable == variable


@given(st.text().filter(lambda s: "$" not in s))
def test_text_without_dollar_is_unchanged(text):
    assert interpolate_string(text, ENV) == text


@given(st.text(alphabet=st.sampled_from("${}:-+?_aZ9 \nx")) | st.text())
def test_doubled_dollars_are_literal(text):
    assert interpolate_string(text.replace("$", "$$"), ENV) == text


@given(st.text(alphabet=st.sampled_from("${}:-+?[]_aAZ9 \nx")))
def test_any_text_interpolates_or_raises_interpolation_error(text):
    try:
        interpolate_string(text, ENV)
    except InterpolationError:
        pass


@given(st.from_regex(r"[_a-zA-Z][_a-zA-Z0-9]*", fullmatch=True), st.text(alphabet=st.characters(exclude_characters="$\n{}")))
def test_a_set_variable_wins_over_its_default(name, default):
    env = {name: "value"}
    assert interpolate_string(f"${{{name}:-{default}}}", env) == "value"
    assert interpolate_string(f"${{{name}}}", env) == "value"
    assert interpolate_string(f"${name}", env) == "value"
    assert interpolate_string(f"${{{name}:-{default}}}", {}) == default


# --- trees ---------------------------------------------------------------------------------------

SPEC = """\
services:
  web:
    image: "nginx:${TAG:-latest}"
    command: ["echo", "$GREETING", "$$HOME"]
    environment:
      ${KEY}: $FOO
    ports:
      - 80
    deploy: !override
      replicas: 2
    labels:
      - "a=${MISSING}"
      - "b=${MISSING} ${OTHER}"
x-common:
  value: ${FOO}
"""


def test_tree_values_are_interpolated_and_keys_are_not():
    tree = parse_yaml(SPEC, "c.yaml")
    out, warnings = interpolate_with_warnings(tree, {"FOO": "foo", "GREETING": "hi"})
    web = out["services"]["web"]
    assert web["image"] == "nginx:latest"
    assert web["command"] == ["echo", "hi", "$HOME"]
    assert web["environment"] == {"${KEY}": "foo"}
    assert web["ports"] == [80]
    assert web["deploy"] == {"replicas": 2}
    assert web["labels"] == ["a=", "b= "]
    assert out["x-common"] == {"value": "foo"}  # compose interpolates extensions too
    # one warning per unset variable, at its first use
    assert [str(w) for w in warnings] == [
        'c.yaml:12:9: services.web.labels[0]: variable "MISSING" is not set, defaulting to a blank string',
        'c.yaml:13:9: services.web.labels[1]: variable "OTHER" is not set, defaulting to a blank string',
    ]
    assert interpolate(tree, {"FOO": "foo", "GREETING": "hi"}) == out


def test_tree_keeps_locations_and_tags():
    tree = parse_yaml(SPEC, "c.yaml")
    out = interpolate(tree, {"FOO": "foo"})
    web, old = out["services"]["web"], tree["services"]["web"]
    assert isinstance(web, Map) and isinstance(web["command"], Seq)
    assert web.loc == old.loc
    assert web.key_locs == old.key_locs
    assert web.value_locs == old.value_locs
    assert web.value_locs["image"] == Location("c.yaml", 3, 12)
    assert web.tags == {"deploy": "override"}
    assert web["command"].item_locs == old["command"].item_locs
    assert web["command"].loc == old["command"].loc
    assert out.loc == tree.loc


def test_tree_is_not_modified():
    tree = parse_yaml(SPEC, "c.yaml")
    interpolate(tree, {"FOO": "foo"})
    assert tree["services"]["web"]["image"] == "nginx:${TAG:-latest}"


def test_tree_non_strings_are_unchanged():
    tree = parse_yaml("a: 1\nb: true\nc: null\nd: 1.5\ne: [1, false]\n", "c.yaml")
    assert interpolate(tree, {}) == {"a": 1, "b": True, "c": None, "d": 1.5, "e": [1, False]}


def test_tree_errors_are_all_reported_and_located():
    text = """\
services:
  db:
    image: postgres
    environment:
      POSTGRES_PASSWORD: ${DB_PASSWORD:?set it in .env}
  web:
    image: "${"
    command: ["ok", "${A:-x} ${B"]
"""
    with pytest.raises(SpecError) as info:
        interpolate(parse_yaml(text, "c.yaml"), {})
    assert [str(p) for p in info.value.problems] == [
        'c.yaml:5:26: services.db.environment.POSTGRES_PASSWORD: '
        'required variable "DB_PASSWORD" is missing a value: set it in .env',
        'c.yaml:7:12: services.web.image: invalid interpolation format "${" (write "$$" for a literal "$")',
        'c.yaml:8:21: services.web.command[1]: invalid interpolation format "${A:-x} ${B" '
        '(write "$$" for a literal "$")',
    ]


def test_warnings_are_empty_when_everything_is_set():
    tree = parse_yaml("a: ${X}\nb: [$X, '${Y:-d}']\n", "c.yaml")
    out, warnings = interpolate_with_warnings(tree, {"X": "1"})
    assert out == {"a": "1", "b": ["1", "d"]}
    assert warnings == []
