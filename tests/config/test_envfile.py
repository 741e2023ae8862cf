"""The env file format, case for case against compose-go's dotenv tests, plus located errors."""

import pytest
from hypothesis import given, strategies as st

from supervisor.config.envfile import parse_env_file, parse_env_text
from supervisor.errors import Location, Problem, SpecError


def parse(text, lookup=None):
    return parse_env_text(text, "t.env", lookup)


def problems(text, lookup=None):
    with pytest.raises(SpecError) as info:
        parse(text, lookup)
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the basics (TestParse, TestParsing)
        ("ONE=1\nTWO='2'\nTHREE = \"3\"", {"ONE": "1", "TWO": "2", "THREE": "3"}),
        ("FOO=bar", {"FOO": "bar"}),
        ("FOO =bar", {"FOO": "bar"}),
        ("FOO= bar", {"FOO": "bar"}),
        ('FOO="bar"', {"FOO": "bar"}),
        ("FOO='bar'", {"FOO": "bar"}),
        ("FOO=", {"FOO": ""}),
        ("FOO=\nBAR=1", {"FOO": "", "BAR": "1"}),
        ('FOO=""', {"FOO": ""}),
        ("FOO=foobar=", {"FOO": "foobar="}),
        ("FOO=bar ", {"FOO": "bar"}),
        ("FOO=a b  c", {"FOO": "a b  c"}),
        ("OPTION_A: 1", {"OPTION_A": "1"}),  # yaml style
        ("OPTION_A: Foo=bar", {"OPTION_A": "Foo=bar"}),
        ("OPTION_A=1:B", {"OPTION_A": "1:B"}),
        ("OPTION_A=postgres://localhost:5432/database?sslmode=disable",
         {"OPTION_A": "postgres://localhost:5432/database?sslmode=disable"}),
        ("FOO.BAR=foobar", {"FOO.BAR": "foobar"}),
        ("a[1]=c\na.propertyKey=d\nárvíztűrő-TÜKÖRFÚRÓGÉP=ÁRVÍZTŰRŐ-tükörfúrógép",
         {"a[1]": "c", "a.propertyKey": "d", "árvíztűrő-TÜKÖRFÚRÓGÉP": "ÁRVÍZTŰRŐ-tükörfúrógép"}),
        ("A=1\nA=2", {"A": "2"}),  # the last one wins
        # export
        ("export OPTION_A=2", {"OPTION_A": "2"}),
        ("export OPTION_B='\\n'", {"OPTION_B": "\\n"}),
        ("export exportFoo=2", {"exportFoo": "2"}),
        ("exportFOO=2", {"exportFOO": "2"}),
        ("export_FOO =2", {"export_FOO": "2"}),
        ("export.FOO= 2", {"export.FOO": "2"}),
        ("export\tOPTION_A=2", {"OPTION_A": "2"}),
        ("  export OPTION_A=2", {"OPTION_A": "2"}),
        ("\texport OPTION_A=2", {"OPTION_A": "2"}),
        ("export=1", {"export": "1"}),
        # whitespace, blank lines, comments
        (" KEY =value", {"KEY": "value"}),
        ("   KEY=value", {"KEY": "value"}),
        ("\tKEY=value", {"KEY": "value"}),
        ("\n\n\r\n\t\t \n", {}),
        ("# Comment", {}),
        ("\t # comment\nA=1", {"A": "1"}),
        ("# c\nA=1 # c\n# c\nB=2", {"A": "1", "B": "2"}),
        ("FOO=bar # this is foo", {"FOO": "bar"}),
        ("FOO=a#b", {"FOO": "a#b"}),  # a comment needs a space before `#`
        ("FOO=a\t#b", {"FOO": "a\t#b"}),  # ... an actual space
        ("FOO= #b", {"FOO": "#b"}),  # spaces after `=` go before the value is read
        ('FOO="bar#baz" # comment', {"FOO": "bar#baz"}),
        ("FOO='bar#baz' # comment", {"FOO": "bar#baz"}),
        ('FOO="bar#baz#bang" # comment', {"FOO": "bar#baz#bang"}),
        ('FOO="ba#r"', {"FOO": "ba#r"}),
        ("FOO=1\r\nBAR=2\r\n", {"FOO": "1", "BAR": "2"}),
        ("\ufeffFOO=1", {"FOO": "1"}),  # a UTF-8 byte order mark is skipped
        # quotes
        ('FOO="escaped\\"bar"', {"FOO": 'escaped"bar'}),
        ("FOO=\"'d'\"", {"FOO": "'d'"}),
        ("FOO='\"d\"'", {"FOO": '"d"'}),
        ("FOO='it\\'s'", {"FOO": "it's"}),  # only the quote loses its backslash
        ("FOO='a\\nb\\\\'", {"FOO": "a\\nb\\\\"}),  # single quotes: everything else is literal
        ('FOO="bar\\nbaz"', {"FOO": "bar\nbaz"}),
        ('FOO="a\\tb\\rc\\\\d"', {"FOO": "a\tb\rc\\d"}),
        ('FOO="\\a\\b\\f\\v"', {"FOO": "\a\b\f\v"}),
        ('FOO="bar\\n\\ b\\az"', {"FOO": "bar\n\\ b\az"}),  # unknown escapes keep their backslash
        ('FOO="\\0123"', {"FOO": "S"}),  # octal
        ('FOO="\\012"', {"FOO": "\\12"}),  # compose-go's quirk: `\0` + fewer than 3 digits
        ('FOO="\\x41\\u0041"', {"FOO": "\\x41\\u0041"}),
        ('FOO="line 1\nline 2"\nBAR=x', {"FOO": "line 1\nline 2", "BAR": "x"}),
        ("FOO='line 1\nline 2'", {"FOO": "line 1\nline 2"}),
        ('TEST_URLS="stratum+tcp://a:3333\nstratum+tcp://a:443"',
         {"TEST_URLS": "stratum+tcp://a:3333\nstratum+tcp://a:443"}),
        ('A="x" B="y"', {"A": "x", "B": "y"}),  # parsing goes on after a closing quote
        ('FOO=" spaced "', {"FOO": " spaced "}),
        # expansion (TestExpanding, TestSubstitutions)
        ("FOO=test\nBAR=$FOO", {"FOO": "test", "BAR": "test"}),
        ("FOO=test\nBAR=${FOO}bar", {"FOO": "test", "BAR": "testbar"}),
        ("BAR=$FOO", {"BAR": ""}),
        ('FOO=test\nBAR="quote $FOO"', {"FOO": "test", "BAR": "quote test"}),
        ("BAR='quote $FOO'", {"BAR": "quote $FOO"}),
        ('FOO="foo\\$BAR"', {"FOO": "foo$BAR"}),
        ('FOO="foo\\${BAR}"', {"FOO": "foo${BAR}"}),
        ('FOO=test\nBAR="foo\\${FOO} ${FOO}"', {"FOO": "test", "BAR": "foo${FOO} test"}),
        ("FOO=$$BAR", {"FOO": "$BAR"}),
        ("A=1\nB=${A}\nC=$A\nD=${A}${A}\nE=${NOPE}", {"A": "1", "B": "1", "C": "1", "D": "11", "E": ""}),
        ("A=${X:-def}\nB=${A:+set}\nC=${A-x}", {"A": "def", "B": "set", "C": "def"}),
        ("B=$A\nA=1", {"B": "", "A": "1"}),  # only keys defined earlier
        ("FOO=a $ b", {"FOO": "a $ b"}),
    ],
)
def test_parse(text, expected):
    result = parse(text)
    assert result == expected
    assert list(result) == list(expected)


ENV = {"FROM_ENV": "env-value", "A": "from-env", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM_ENV", {"FROM_ENV": "env-value"}),  # a key alone takes its value from the environment
        ("FROM_ENV\n", {"FROM_ENV": "env-value"}),
        ("  FROM_ENV  \nX=1", {"FROM_ENV": "env-value", "X": "1"}),
        ("EMPTY", {"EMPTY": ""}),
        ("NOT_THERE\nX=1", {"X": "1"}),  # ... and is left out when it has none
        ("FROM_ENV=file", {"FROM_ENV": "file"}),  # a value in the file is the file's
        ("X=$FROM_ENV", {"X": "env-value"}),
        ("A=file\nX=$A", {"A": "file", "X": "from-env"}),  # the environment wins, as in compose
        ("X=${EMPTY:-d}", {"X": "d"}),
        ("X='$FROM_ENV'", {"X": "$FROM_ENV"}),
    ],
)
def test_parse_with_lookup(text, expected):
    assert parse(text, ENV.get) == expected


def test_key_alone_without_lookup_is_left_out():
    assert parse("KEY\nX=1") == {"X": "1"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1A=x", ['t.env:1:1: invalid variable name "1A": a name cannot start with a digit']),
        ("A=1\n  9=x", ['t.env:2:3: invalid variable name "9": a name cannot start with a digit']),
        ("lol$wut", ['t.env:1:4: invalid variable name "lol$wut": unexpected character "$"']),
        ("%!(EXTRA string)=foo", ['t.env:1:1: invalid variable name "%!(EXTRA string)": unexpected character "%"']),
        ("FOO BAR=1", ['t.env:1:4: invalid variable name "FOO BAR": a name cannot contain spaces']),
        ("=value", ["t.env:1:1: missing variable name"]),
        ('="value"', ["t.env:1:1: missing variable name"]),
        ('KEY="value', ['t.env:1:5: unterminated quoted value "\\"value": no closing "']),
        ('KEY="', ['t.env:1:5: unterminated quoted value "\\"": no closing "']),
        ("A=1\nKEY='a\nb\n", ["t.env:2:5: unterminated quoted value \"'a\": no closing '"]),
        ('KEY="a\\"', ['t.env:1:5: unterminated quoted value "\\"a\\\\\\"": no closing "']),
        ("X=${A:?need it}", ['t.env:1:3: required variable "A" is missing a value: need it']),
        ('X="${A?}"', ['t.env:1:3: required variable "A" is missing a value']),
        ("X=${", ['t.env:1:3: invalid interpolation format "${" (write "$$" for a literal "$")']),
        # several problems are reported together, and a bad line does not derail the next ones
        ("1A=x\nB=${C:?c}\nD=ok\nE F=1\n", [
            't.env:1:1: invalid variable name "1A": a name cannot start with a digit',
            't.env:2:3: required variable "C" is missing a value: c',
            't.env:4:2: invalid variable name "E F": a name cannot contain spaces',
        ]),
        ('1A="multi\nline=value"\nB C=1', [
            't.env:1:1: invalid variable name "1A": a name cannot start with a digit',
            't.env:3:2: invalid variable name "B C": a name cannot contain spaces',
        ]),
    ],
)
def test_errors_are_located(text, expected):
    assert problems(text) == expected


def test_error_location_is_a_location():
    with pytest.raises(SpecError) as info:
        parse("A=1\n\n  1B=2")
    assert info.value.problems == (
        Problem('invalid variable name "1B": a name cannot start with a digit', location=Location("t.env", 3, 3)),
    )


def test_parse_env_file(tmp_path):
    path = tmp_path / "app.env"
    path.write_text("# settings\nA=1\nB=${A}2\nHOME\n", encoding="utf-8")
    assert parse_env_file(str(path)) == {"A": "1", "B": "12"}
    assert parse_env_file(str(path), {"HOME": "/root"}.get) == {"A": "1", "B": "12", "HOME": "/root"}


def test_parse_env_file_locates_errors_in_the_file(tmp_path):
    path = tmp_path / "bad.env"
    path.write_text("A=1\n2B=x\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        parse_env_file(str(path))
    assert info.value.problems[0].location == Location(str(path), 2, 1)


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.env")
    with pytest.raises(SpecError) as info:
        parse_env_file(path)
    assert info.value.problems == (Problem("no such file", file=path),)


def test_directory_and_bad_encoding(tmp_path):
    with pytest.raises(SpecError) as info:
        parse_env_file(str(tmp_path))
    assert info.value.problems[0].message == "is a directory, not an env file"
    path = tmp_path / "latin1.env"
    path.write_bytes(b"A=caf\xe9\n")
    with pytest.raises(SpecError) as info:
        parse_env_file(str(path))
    assert info.value.problems[0].message == "not UTF-8 text (byte 5)"


# --- properties ----------------------------------------------------------------------------------

_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True).filter(lambda n: n != "export")
_plain = st.text(alphabet=st.characters(exclude_characters="\n\r\\'\"#$", exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), max_size=20)


@given(st.dictionaries(_names, _plain, max_size=8))
def test_written_files_read_back(values):
    unquoted = "\n".join(f"{k}={v}" for k, v in values.items())
    single = "\n".join(f"{k}='{v}'" for k, v in values.items())
    double = "\n".join(f'export {k}="{v}"  # note' for k, v in values.items())
    assert parse(unquoted) == {k: v.strip() for k, v in values.items()}
    assert parse(single) == values
    assert parse(double) == values


@given(st.text(alphabet=st.sampled_from("AB1=:'\"\\#$ {}-\n\tx")) | st.text())
def test_any_text_parses_or_raises_spec_error(text):
    try:
        parse(text)
    except SpecError as exc:
        assert all(p.location is not None and p.location.file == "t.env" for p in exc.problems)
