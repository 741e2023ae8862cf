"""Compose's value units: durations, byte sizes, CPU counts and signals.

Each parser follows what Docker Compose accepts, so a file that works there works here:
- durations are Go durations as compose-go reads them (`xhit/go-str2duration`: Go's
  `time.ParseDuration` plus `d` and `w`); a bare number is refused unless it is `0`, because
  compose-go formats the number and then asks for a unit;
- byte sizes are `docker/go-units.RAMInBytes`: binary multiples, case-insensitive `b`, `k`, `m`,
  `g`, `t`, `p` with an optional `b` or `ib`, fractions truncated;
- CPUs are a decimal float;
- signals are moby's `signal.ParseSignal`: a number, or a name with or without `SIG`, any case,
  including `RTMIN+n` / `RTMAX-n`.

Unlike compose, negative values are refused everywhere: nothing in a service spec means anything
with a negative duration, size or CPU count, and saying so early beats a confusing kernel error.
Every refusal is a `UnitError` whose message can be shown as is.
"""

from __future__ import annotations

import json
import math
import re
import signal

__all__ = [
    "UnitError",
    "parse_duration",
    "parse_duration_ns",
    "parse_seconds",
    "format_duration",
    "format_duration_ns",
    "parse_bytes",
    "parse_cpus",
    "parse_signal",
    "signal_name",
]

_INT64_MAX = 2**63 - 1


class UnitError(ValueError):
    """A value that is not a valid duration, size, CPU count or signal. `str()` is the message."""


def _q(value: object) -> str:
    """Quote a bad value the way every pysup message does: double quotes, escapes for controls."""
    return json.dumps(value if isinstance(value, str) else str(value), ensure_ascii=False)


# --- durations -----------------------------------------------------------------------------------

_NS = 1
_US = 1_000
_MS = 1_000_000
_S = 1_000_000_000
_DURATION_UNITS = {
    "ns": _NS,
    "us": _US,
    "\u00b5s": _US,  # micro sign, what Go prints
    "\u03bcs": _US,  # Greek mu, which Go also reads
    "ms": _MS,
    "s": _S,
    "m": 60 * _S,
    "h": 3600 * _S,
    "d": 86400 * _S,
    "w": 7 * 86400 * _S,
}
_SCALE = 10**30  # the fraction digits a duration keeps (see parse_duration_ns)
# One `<number><unit>` component: digits with an optional fraction, then every non-digit up to the
# next number. Taking the unit greedily like Go does makes "1x" report the unit "x" exactly.
_COMPONENT = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")


def parse_duration_ns(value: object) -> int:
    """A compose duration in whole nanoseconds (exact: no float rounding on the way)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UnitError(f"invalid duration {_q(value)}: expected a string like \"1m30s\"")
    if isinstance(value, (int, float)):
        if value == 0:
            return 0
        raise UnitError(f"invalid duration {_q(value)}: a unit is required, e.g. \"{_q_num(value)}s\"")
    text = value
    if text.startswith("-"):
        raise UnitError(f"invalid duration {_q(text)}: must not be negative")
    rest = text[1:] if text.startswith("+") else text
    if rest == "0":
        return 0
    if not rest:
        raise UnitError(f"invalid duration {_q(text)}")
    total = 0  # in units of 10**-30 ns: exact for the fraction digits kept below, without Fraction
    pos = 0
    while pos < len(rest):
        m = _COMPONENT.match(rest, pos)
        assert m is not None  # every part of the pattern is optional
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and not frac:
            raise UnitError(f"invalid duration {_q(text)}")
        if not unit:
            raise UnitError(f"invalid duration {_q(text)}: missing unit after {_q(m.group(0))}")
        if unit not in _DURATION_UNITS:
            raise UnitError(
                f"invalid duration {_q(text)}: unknown unit {_q(unit)} (use ns, us, ms, s, m, h, d or w)"
            )
        if len(whole.lstrip("0")) > 19:  # more than int64 nanoseconds whatever the unit
            raise UnitError(f"invalid duration {_q(text)}: out of range")
        frac = (frac or "")[:30]  # digits past this cannot move the result by a nanosecond
        number = int(whole or "0") * _SCALE + (int(frac) * 10 ** (30 - len(frac)) if frac else 0)
        total += number * _DURATION_UNITS[unit]
        if total > _INT64_MAX * _SCALE:
            raise UnitError(f"invalid duration {_q(text)}: out of range")
        pos = m.end()
    return total // _SCALE  # Go truncates sub-nanosecond fractions


def _q_num(value: int | float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def parse_duration(value: object) -> float:
    """A compose duration ("1m30s", "500ms", "1.5h", "2d") in seconds."""
    return parse_duration_ns(value) / _S


def parse_seconds(value: object) -> float:
    """pysup's own (`x-pysup`) durations: a compose duration string, or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0 or value != value or value == float("inf"):
            raise UnitError(f"invalid duration {_q_num(value)}: must be a finite number of seconds, at least 0")
        return float(value)
    return parse_duration(value)


def format_duration_ns(ns: int) -> str:
    """Go's `time.Duration.String()`: "1h0m0s", "1m30s", "1.5s", "500ms", "10µs", "0s"."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < _S:
        if u < _US:
            return f"{sign}{u}ns"
        if u < _MS:
            return f"{sign}{_frac(u, 3)}\u00b5s"
        return f"{sign}{_frac(u, 6)}ms"
    out = _frac(u % (60 * _S), 9) + "s"
    minutes = u // (60 * _S)
    if minutes:
        out = f"{minutes % 60}m" + out
        hours = minutes // 60
        if hours:
            out = f"{hours}h" + out
    return sign + out


def _frac(v: int, prec: int) -> str:
    """`v / 10**prec` with the fraction's trailing zeros dropped, as Go's fmtFrac does."""
    whole, frac = divmod(v, 10**prec)
    digits = f"{frac:0{prec}d}".rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def format_duration(seconds: float) -> str:
    """Seconds as compose prints a duration ("1m30s", "500ms", "10s"), rounded to nanoseconds."""
    if not math.isfinite(seconds):
        raise UnitError(f"invalid duration {_q(seconds)}")
    return format_duration_ns(round(seconds * _S))


# --- byte sizes ----------------------------------------------------------------------------------

_BINARY = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
# Go's strconv.ParseFloat for what go-units hands it (decimal only; hex floats are not worth it).
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_bytes(value: object) -> int:
    """A compose byte size ("512m", "1.5GB", "1GiB", "100k", 2048) in bytes."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UnitError(f"invalid byte size {_q(value)}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise UnitError(f"invalid byte size {_q(value)}")
        if value < 0:
            raise UnitError(f"invalid byte size {_q(value)}: must not be negative")
        if value > _INT64_MAX:
            raise UnitError(f"invalid byte size {_q(value)}: out of range")
        return int(value)
    text = value
    # go-units splits at the last digit, dot or space: what is before is the number (one space
    # between number and unit is allowed), what is after is the unit.
    sep = max(text.rfind(c) for c in "0123456789. ")
    if sep == -1:
        raise UnitError(f"invalid byte size {_q(text)}")
    number = text[:sep] if text[sep] == " " else text[: sep + 1]
    suffix = text[sep + 1 :]
    if not _DECIMAL.fullmatch(number):
        raise UnitError(f"invalid byte size {_q(text)}")
    if number.startswith("-"):
        raise UnitError(f"invalid byte size {_q(text)}: must not be negative")
    size = float(number)  # float64 arithmetic, like go-units
    low = suffix.lower()
    if low == "" or low == "b":
        multiplier = 1
    elif len(low) <= 3 and low[0] in _BINARY and low[1:] in ("", "b", "ib"):
        multiplier = _BINARY[low[0]]
    else:
        raise UnitError(f"invalid byte size {_q(text)}: unknown unit {_q(suffix)} (use b, k, m, g, t or p)")
    result = size * multiplier
    if result >= 2**63:
        raise UnitError(f"invalid byte size {_q(text)}: out of range")
    return int(result)  # fractions of a byte are truncated, as go-units does


# --- CPUs ----------------------------------------------------------------------------------------


def parse_cpus(value: object) -> float:
    """A CPU count ("0.5", 1, 1.5): how many CPUs' worth of time a container may use."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UnitError(f"invalid cpus {_q(value)}")
    if isinstance(value, str):
        if not _DECIMAL.fullmatch(value):
            raise UnitError(f"invalid cpus {_q(value)}: expected a number like \"1.5\"")
        number = float(value)
    else:
        number = float(value)
    if not math.isfinite(number):
        raise UnitError(f"invalid cpus {_q(value)}")
    if number < 0:
        raise UnitError(f"invalid cpus {_q(value)}: must not be negative")
    return number


# --- signals -------------------------------------------------------------------------------------

_SIGRTMIN = int(signal.SIGRTMIN)
_SIGRTMAX = int(signal.SIGRTMAX)
_RT = re.compile(r"RT(MIN|MAX)(?:([+-])([0-9]+))?")


def parse_signal(value: object) -> int:
    """A signal ("SIGTERM", "term", "15", 15, "SIGRTMIN+3") as its number on this system."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UnitError(f"invalid signal {_q(value)}")
    if isinstance(value, int) or value.isascii() and value.isdigit():
        if isinstance(value, str) and len(value.lstrip("0")) > 4:
            raise UnitError(f"invalid signal {_q(value)}: no signal has that number")
        num = int(value)
        if not 1 <= num <= _SIGRTMAX:
            raise UnitError(f"invalid signal {_q(value)}: no signal has number {num}")
        return num
    name = value.upper()
    name = name[3:] if name.startswith("SIG") else name
    rt = _RT.fullmatch(name)
    if rt:
        # moby knows RTMIN+n and RTMAX-n only, each staying inside the realtime range.
        is_min, sign, offset = rt.group(1) == "MIN", rt.group(2), rt.group(3) or "0"
        if sign in (None, "+" if is_min else "-") and len(offset) <= 4:
            num = _SIGRTMIN + int(offset) if is_min else _SIGRTMAX - int(offset)
            if _SIGRTMIN <= num <= _SIGRTMAX:
                return num
        raise UnitError(f"invalid signal {_q(value)}")
    try:
        return int(signal.Signals["SIG" + name])
    except KeyError:
        raise UnitError(f"invalid signal {_q(value)}") from None


def signal_name(num: int) -> str:
    """The usual name of signal `num`: "SIGTERM", "SIGRTMIN+3" (moby's spelling for realtime)."""
    if _SIGRTMIN < num < _SIGRTMAX:
        mid = (_SIGRTMIN + _SIGRTMAX) // 2
        return f"SIGRTMIN+{num - _SIGRTMIN}" if num <= mid else f"SIGRTMAX-{_SIGRTMAX - num}"
    try:
        return signal.Signals(num).name
    except ValueError:
        raise UnitError(f"invalid signal {_q(num)}: no signal has number {num}") from None
