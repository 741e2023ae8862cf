"""Compose's `.env` / `env_file` format, parsed as compose-go's `dotenv` parser does.

What a line can be (compose-go `dotenv/parser.go`, v2):
- blank, or a comment starting with `#` (after optional whitespace);
- `KEY=VALUE`, `KEY: VALUE` (yaml style) or `export KEY=VALUE`; spaces around `=` are ignored;
- `KEY` alone: the value comes from `lookup`, and the key is left out when `lookup` has none;
- an unquoted value runs to the end of the line, stops at ` #` (a space, then `#`) and loses
  trailing whitespace; `${VAR}` / `$VAR` / `${VAR:-default}` ... are expanded;
- a single-quoted value is literal (only `\\'` becomes `'`); it may span lines;
- a double-quoted value may span lines, has `\\n \\t \\r \\" \\\\ \\$` (and `\\a \\b \\f \\v`,
  octal `\\0NNN`) escapes, and is expanded like an unquoted one;
- after a closing quote, parsing goes on with whatever follows (normally ` # comment`).

Expansion looks a name up with `lookup` first, then among the keys defined earlier in the file,
as compose does (`dotenv.ExpandVariables`): the environment wins over the file.

Stricter than compose, on purpose: a key must not be empty or start with a digit (compose keeps
`=x` as the key "" and silently drops `1A=x` from a project `.env`), and a key alone on the last
line without a newline is a key (compose reads it as the key "" with the line as its value).
Every error names file, line and column.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping

from ..errors import Location, Problem, SpecError
from .interpolate import InterpolationError, interpolate_string
from .source import read_text

__all__ = ["parse_env_file", "parse_env_text"]

LookupFn = Callable[[str], "str | None"]

# Go's isSpace in the parser: whitespace that is not a line break.
_SPACE = frozenset("\t\v\f\r \x85\xa0")
_EXPORT = re.compile(r"export[ \t\v\f\r\x85\xa0]+")
_ESCAPE = re.compile(r'\\(?:[abcfnrtv$"\\]|0[0-9]{0,3})')
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", '"': '"', "\\": "\\"}


def _is_go_space(c: str) -> bool:
    """Go's unicode.IsSpace (Python's isspace also counts the \\x1c-\\x1f separators)."""
    return c in _SPACE or c == "\n" or (ord(c) > 0xFF and c.isspace())


def _rstrip_space(text: str) -> str:
    end = len(text)
    while end and _is_go_space(text[end - 1]):
        end -= 1
    return text[:end]


def _is_key_char(c: str) -> bool:
    return c in "_.-[]" or unicodedata.category(c)[0] in "LN"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _expand_escapes(value: str) -> str:
    r"""Double-quoted escapes, as compose-go's expandEscapes (quirks kept: `\012` stays `\12`)."""

    def one(m: re.Match[str]) -> str:
        text = m.group(0)
        if text == "\\$":
            return "$$"  # the interpolation step turns it into a literal `$`
        if text.startswith("\\0"):
            digits = text[2:]  # Go rewrites `\0NNN` to `\NNN`, which needs exactly three octal digits
            if len(digits) == 3 and all(d in "01234567" for d in digits) and int(digits, 8) <= 0xFF:
                return chr(int(digits, 8))
            return "\\" + digits
        return _SIMPLE_ESCAPES.get(text[1], text)

    return _ESCAPE.sub(one, value)


class _Env(Mapping[str, str]):
    """The names a value can use: `lookup` first, then the keys defined so far."""

    def __init__(self, lookup: LookupFn | None, defined: dict[str, str]):
        self.lookup = lookup
        self.defined = defined

    def __getitem__(self, name: str) -> str:
        if self.lookup is not None:
            value = self.lookup(name)
            if value is not None:
                return value
        return self.defined[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.defined)

    def __len__(self) -> int:
        return len(self.defined)


class _ParseError(Exception):
    def __init__(self, message: str, pos: int):
        self.message = message
        self.pos = pos


class _Parser:
    def __init__(self, text: str, file: str, lookup: LookupFn | None):
        self.text = text
        self.file = file
        self.lookup = lookup
        self.out: dict[str, str] = {}
        self.env = _Env(lookup, self.out)
        self.problems: list[Problem] = []

    def location(self, pos: int) -> Location:
        line = self.text.count("\n", 0, pos) + 1
        col = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return Location(self.file, line, col)

    def fail(self, message: str, pos: int) -> None:
        self.problems.append(Problem(message, location=self.location(pos)))

    def line_end(self, pos: int) -> int:
        end = self.text.find("\n", pos)
        return len(self.text) if end == -1 else end

    def parse(self) -> dict[str, str]:
        text, pos = self.text, 0
        while True:
            while pos < len(text) and _is_go_space(text[pos]):
                pos += 1
            if pos >= len(text):
                break
            if text[pos] == "#":
                pos = self.line_end(pos)
                continue
            try:
                pos = self.statement(pos)
            except _ParseError as exc:  # an unterminated quote: where anything ends is a guess
                self.fail(exc.message, exc.pos)
                break
        return self.out

    def statement(self, start: int) -> int:
        text = self.text
        pos = start
        m = _EXPORT.match(text, pos)
        if m:
            pos = m.end()
        key_start = pos
        while pos < len(text) and text[pos] not in "=:\n":
            pos += 1
        raw_key = text[key_start:pos]
        key = _rstrip_space(raw_key)
        key_ok = self.check_key(key, key_start)
        if pos >= len(text) or text[pos] == "\n":  # `KEY` alone: inherited from the environment
            value = self.lookup(key) if self.lookup is not None and key_ok else None
            if value is not None:
                self.out[key] = value
            return pos
        pos += 1
        while pos < len(text) and text[pos] in _SPACE:
            pos += 1
        # A bad key still has its value read, so parsing resumes after it (it may span lines).
        value, pos = self.value(pos)
        if key_ok:
            self.out[key] = value
        return pos

    def check_key(self, key: str, pos: int) -> bool:
        """Record a problem and return False when `key` is not a usable name."""
        problem: tuple[str, int] | None = None
        if not key:
            problem = ("missing variable name", pos)
        else:
            for i, c in enumerate(key):
                if _is_go_space(c):
                    problem = (f"invalid variable name {_quote(key)}: a name cannot contain spaces", pos + i)
                elif not _is_key_char(c):
                    problem = (f"invalid variable name {_quote(key)}: unexpected character {_quote(c)}", pos + i)
                if problem:
                    break
            else:
                if key[0].isdigit():
                    problem = (f"invalid variable name {_quote(key)}: a name cannot start with a digit", pos)
        if problem:
            self.fail(*problem)
        return problem is None

    def value(self, pos: int) -> tuple[str, int]:
        text = self.text
        if pos < len(text) and text[pos] in "'\"":
            quote = text[pos]
            chars: list[str] = []
            i = pos + 1
            while i < len(text):
                c = text[i]
                if c == "\\" and i + 1 < len(text):
                    nxt = text[i + 1]
                    chars.append(nxt if nxt == quote else c + nxt)  # only the quote drops its backslash
                    i += 2
                    continue
                if c == quote:
                    raw = "".join(chars)
                    if quote == "'":
                        return raw, i + 1
                    return self.expand(_expand_escapes(raw), pos), i + 1
                chars.append(c)
                i += 1
            end = self.line_end(pos)
            raise _ParseError(f"unterminated quoted value {_quote(text[pos:end])}: no closing {quote}", pos)
        end = self.line_end(pos)
        raw = text[pos:end]
        cut = raw.find(" #")
        if cut != -1:
            raw = raw[:cut]
        return self.expand(_rstrip_space(raw), pos), end

    def expand(self, value: str, pos: int) -> str:
        try:
            return interpolate_string(value, self.env)
        except InterpolationError as exc:
            self.fail(str(exc), pos)
            return ""


def parse_env_text(text: str, file: str, lookup: LookupFn | None = None) -> dict[str, str]:
    """Parse the text of an env file; `file` is the name errors show.

    `lookup(name)` gives a variable from outside the file (None when unset): it supplies `KEY`
    lines and takes precedence in `${...}` expansion. Raises SpecError, one Problem per bad line.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    parser = _Parser(text, file, lookup)
    out = parser.parse()
    if parser.problems:
        raise SpecError(parser.problems)
    return out


def parse_env_file(path: str, lookup: LookupFn | None = None) -> dict[str, str]:
    """Read and parse an env file (see `parse_env_text`). A missing file is a SpecError."""
    text = read_text(path, what="env file")
    return parse_env_text(text, path, lookup)
