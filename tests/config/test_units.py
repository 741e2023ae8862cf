"""Compose value units: durations, byte sizes, CPUs and signals, as compose-go reads them."""

import signal

import pytest
from hypothesis import given, strategies as st

from supervisor.config.units import (
    UnitError,
    format_duration,
    format_duration_ns,
    parse_bytes,
    parse_cpus,
    parse_duration,
    parse_duration_ns,
    parse_signal,
    signal_name,
)

S = 1_000_000_000


# --- durations -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1h30m", 5400 * S),
        ("1m30s", 90 * S),
        ("500ms", S // 2),
        ("1.5s", 3 * S // 2),
        ("10us", 10_000),
        ("10µs", 10_000),  # micro sign, what Go prints
        ("10μs", 10_000),  # Greek mu
        ("100ns", 100),
        ("2h", 7200 * S),
        ("1h1m1s1ms1us1ns", 3661 * S + 1_001_001),
        ("2d", 2 * 86400 * S),  # str2duration, what compose-go uses, adds days and weeks
        ("1w", 7 * 86400 * S),
        ("1.5h", 5400 * S),
        (".5s", S // 2),
        ("1.s", S),
        ("+5s", 5 * S),
        ("0", 0),
        ("0s", 0),
        ("1.0000000001s", S),  # sub-nanosecond fractions are truncated, as Go does
        ("2562047h47m16.854775807s", 2**63 - 1),  # Go's largest duration
        (0, 0),
        (0.0, 0),
    ],
)
def test_parse_duration(text, ns):
    assert parse_duration_ns(text) == ns
    assert parse_duration(text) == ns / S


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1x", 'invalid duration "1x": unknown unit "x" (use ns, us, ms, s, m, h, d or w)'),
        ("", 'invalid duration ""'),
        ("s", 'invalid duration "s"'),
        (".s", 'invalid duration ".s"'),
        ("1h30", 'invalid duration "1h30": missing unit after "30"'),
        ("1.5", 'invalid duration "1.5": missing unit after "1.5"'),
        ("-1s", 'invalid duration "-1s": must not be negative'),
        ("1S", 'invalid duration "1S": unknown unit "S" (use ns, us, ms, s, m, h, d or w)'),
        (" 1s", 'invalid duration " 1s"'),
        ("1s ", 'invalid duration "1s ": unknown unit "s " (use ns, us, ms, s, m, h, d or w)'),
        ("1e3s", 'invalid duration "1e3s": unknown unit "e" (use ns, us, ms, s, m, h, d or w)'),
        ("2562047h47m16.854775808s", 'invalid duration "2562047h47m16.854775808s": out of range'),
        ("9" * 5000 + "s", f'invalid duration "{"9" * 5000}s": out of range'),
        (10, 'invalid duration "10": a unit is required, e.g. "10s"'),  # compose-go refuses it too
        (1.5, 'invalid duration "1.5": a unit is required, e.g. "1.5s"'),
        (True, 'invalid duration "True": expected a string like "1m30s"'),
        (None, 'invalid duration "None": expected a string like "1m30s"'),
    ],
)
def test_parse_duration_refuses(value, message):
    with pytest.raises(UnitError) as info:
        parse_duration(value)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (999, "999ns"),
        (1_000, "1µs"),
        (1_500, "1.5µs"),
        (S // 2, "500ms"),
        (1_234_567, "1.234567ms"),
        (10 * S, "10s"),
        (90 * S, "1m30s"),
        (60 * S, "1m0s"),
        (3600 * S, "1h0m0s"),
        (5400 * S, "1h30m0s"),
        (61 * S + S // 2, "1m1.5s"),
        (100 * 3600 * S, "100h0m0s"),
        (-90 * S, "-1m30s"),
        (2**63 - 1, "2562047h47m16.854775807s"),
    ],
)
def test_format_duration_is_gos(ns, text):
    assert format_duration_ns(ns) == text
    if ns >= 0:
        assert parse_duration_ns(text) == ns


def test_format_duration_seconds():
    assert format_duration(90) == "1m30s"
    assert format_duration(0.5) == "500ms"
    assert format_duration(10.0) == "10s"
    with pytest.raises(UnitError):
        format_duration(float("inf"))


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_format_then_parse_is_exact_in_nanoseconds(ns):
    assert parse_duration_ns(format_duration_ns(ns)) == ns


@given(st.integers(min_value=0, max_value=10**15))  # up to ~11 days: floats keep every nanosecond
def test_format_then_parse_round_trips_seconds(ns):
    seconds = ns / S
    assert parse_duration(format_duration(seconds)) == seconds


_UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": S, "m": 60 * S, "h": 3600 * S, "d": 86400 * S}


@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(sorted(_UNITS))), min_size=1, max_size=5))
def test_parse_sums_components(parts):
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert parse_duration_ns(text) == sum(n * _UNITS[unit] for n, unit in parts)


# --- byte sizes ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "size"),
    [
        (2048, 2048),
        (0, 0),
        (1e3, 1000),
        ("2048", 2048),
        ("2b", 2),
        ("2B", 2),
        ("100k", 100 * 1024),
        ("100kb", 100 * 1024),
        ("100KiB", 100 * 1024),
        ("512m", 512 * 1024**2),
        ("512MB", 512 * 1024**2),
        ("1g", 1024**3),
        ("1gb", 1024**3),
        ("1GiB", 1024**3),
        ("1.5GB", 3 * 1024**3 // 2),
        ("2t", 2 * 1024**4),
        ("1p", 1024**5),
        ("1 GB", 1024**3),  # go-units allows one space before the unit
        ("1 ", 1),
        ("1.5b", 1),  # fractions of a byte are truncated
        ("1e3", 1000),  # Go's ParseFloat reads exponents
        ("+1k", 1024),
        ("0.5k", 512),
    ],
)
def test_parse_bytes(value, size):
    assert parse_bytes(value) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", 'invalid byte size ""'),
        ("k", 'invalid byte size "k"'),
        ("-1", 'invalid byte size "-1": must not be negative'),
        ("-1k", 'invalid byte size "-1k": must not be negative'),
        (-1, 'invalid byte size "-1": must not be negative'),
        ("1x", 'invalid byte size "1x": unknown unit "x" (use b, k, m, g, t or p)'),
        ("1kbb", 'invalid byte size "1kbb": unknown unit "kbb" (use b, k, m, g, t or p)'),
        ("1kib2", 'invalid byte size "1kib2"'),
        ("1bb", 'invalid byte size "1bb": unknown unit "bb" (use b, k, m, g, t or p)'),
        ("1ki", 'invalid byte size "1ki": unknown unit "ki" (use b, k, m, g, t or p)'),
        (" 1", 'invalid byte size " 1"'),
        ("1  k", 'invalid byte size "1  k"'),
        ("1,5g", 'invalid byte size "1,5g"'),
        ("1e999", 'invalid byte size "1e999": out of range'),
        ("9000000p", 'invalid byte size "9000000p": out of range'),
        (2**63, f'invalid byte size "{2**63}": out of range'),
        (float("nan"), 'invalid byte size "nan"'),
        (True, 'invalid byte size "True"'),
        ([1], 'invalid byte size "[1]"'),
    ],
)
def test_parse_bytes_refuses(value, message):
    with pytest.raises(UnitError) as info:
        parse_bytes(value)
    assert str(info.value) == message


_MULTIPLIERS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


@given(
    st.integers(0, 10**6),
    st.sampled_from(sorted(_MULTIPLIERS)),
    st.sampled_from(["", "b", "ib"]),
    st.booleans(),
)
def test_parse_bytes_multiplies(n, unit, tail, upper):
    suffix = unit + (tail if unit not in ("", "b") else "")
    text = f"{n}{suffix.upper() if upper else suffix}"
    assert parse_bytes(text) == n * _MULTIPLIERS[unit]


# --- CPUs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "cpus"), [("0.5", 0.5), (1, 1.0), ("1.5", 1.5), (2.25, 2.25), ("0", 0.0), (".5", 0.5)])
def test_parse_cpus(value, cpus):
    assert parse_cpus(value) == cpus


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", 'invalid cpus "-1": must not be negative'),
        (-0.5, 'invalid cpus "-0.5": must not be negative'),
        ("one", 'invalid cpus "one": expected a number like "1.5"'),
        ("", 'invalid cpus "": expected a number like "1.5"'),
        ("1_0", 'invalid cpus "1_0": expected a number like "1.5"'),  # Python would read 10
        (" 1", 'invalid cpus " 1": expected a number like "1.5"'),
        ("inf", 'invalid cpus "inf": expected a number like "1.5"'),
        (float("inf"), 'invalid cpus "inf"'),
        (True, 'invalid cpus "True"'),
    ],
)
def test_parse_cpus_refuses(value, message):
    with pytest.raises(UnitError) as info:
        parse_cpus(value)
    assert str(info.value) == message


# --- signals -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "num"),
    [
        ("SIGTERM", signal.SIGTERM),
        ("TERM", signal.SIGTERM),
        ("sigterm", signal.SIGTERM),
        ("SigKill", signal.SIGKILL),
        ("15", 15),
        (15, 15),
        ("SIGHUP", signal.SIGHUP),
        ("SIGIOT", signal.SIGABRT),  # an alias
        ("SIGRTMIN", signal.SIGRTMIN),
        ("SIGRTMIN+3", signal.SIGRTMIN + 3),
        ("rtmin+3", signal.SIGRTMIN + 3),
        ("SIGRTMAX", signal.SIGRTMAX),
        ("SIGRTMAX-2", signal.SIGRTMAX - 2),
    ],
)
def test_parse_signal(value, num):
    assert parse_signal(value) == num


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("SIGFOO", 'invalid signal "SIGFOO"'),
        ("", 'invalid signal ""'),
        ("SIG", 'invalid signal "SIG"'),
        ("0", 'invalid signal "0": no signal has number 0'),
        (0, 'invalid signal "0": no signal has number 0'),
        (-9, 'invalid signal "-9": no signal has number -9'),
        ("-9", 'invalid signal "-9"'),
        (str(int(signal.SIGRTMAX) + 1), f'invalid signal "{int(signal.SIGRTMAX) + 1}": no signal has number {int(signal.SIGRTMAX) + 1}'),
        ("9" * 5000, f'invalid signal "{"9" * 5000}": no signal has that number'),
        ("SIGRTMIN-1", 'invalid signal "SIGRTMIN-1"'),
        ("SIGRTMAX+1", 'invalid signal "SIGRTMAX+1"'),
        ("SIGRTMIN+99", 'invalid signal "SIGRTMIN+99"'),
        ("SIG_DFL", 'invalid signal "SIG_DFL"'),
        (9.0, 'invalid signal "9.0"'),
        (True, 'invalid signal "True"'),
    ],
)
def test_parse_signal_refuses(value, message):
    with pytest.raises(UnitError) as info:
        parse_signal(value)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("num", "name"),
    [
        (signal.SIGTERM, "SIGTERM"),
        (signal.SIGKILL, "SIGKILL"),
        (signal.SIGABRT, "SIGABRT"),
        (signal.SIGRTMIN, "SIGRTMIN"),
        (signal.SIGRTMIN + 3, "SIGRTMIN+3"),
        (signal.SIGRTMAX - 2, "SIGRTMAX-2"),
        (signal.SIGRTMAX, "SIGRTMAX"),
    ],
)
def test_signal_name(num, name):
    assert signal_name(num) == name


def test_signal_name_refuses_unknown_numbers():
    with pytest.raises(UnitError):
        signal_name(0)


@given(st.integers(1, int(signal.SIGRTMAX)))
def test_every_signal_number_has_a_name_that_parses_back(num):
    if num in (32, 33):  # glibc keeps these for threads: Python has no name for them
        return
    assert parse_signal(signal_name(num)) == num


# --- garbage -------------------------------------------------------------------------------------

_anything = st.one_of(
    st.text(),
    st.text(alphabet="0123456789.+-eEkKmMgGbBiIpPtTsShHuUnNdDwWµ :_x"),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@pytest.mark.parametrize("parse", [parse_duration, parse_bytes, parse_cpus, parse_signal])
@given(value=_anything)
def test_garbage_raises_unit_error_only(parse, value):
    try:
        parse(value)
    except UnitError as exc:
        assert str(exc).startswith("invalid ")
