"""structlog set-up: one call at start-up, console for people, JSON on request.

Modules take `log = structlog.get_logger()` at import and bind context (service, replica,
container) with `structlog.contextvars.bound_contextvars` before starting a task; trio copies the
context into child tasks, so every line of a replica's subtree carries it. Only the synchronous log
methods are used: structlog's async ones need asyncio.

Code on the one-shot `pysup run` path (the cgroup drivers) takes `log = supervisor.log.get_logger()`
instead: the same logger, but structlog (~50 ms to import here, with rich) is imported only when a
line is actually written. `configure_lazily(fmt, level)` records the settings for that moment, and
a line below its level is then dropped without importing anything.
"""

from __future__ import annotations

import sys
from typing import Any, Literal, TextIO

LogFormat = Literal["console", "json"]

_LEVELS = {"debug": 10, "info": 20, "msg": 20, "warning": 30, "warn": 30, "error": 40, "exception": 40,
           "critical": 50, "fatal": 50}
_pending: tuple[LogFormat, str, TextIO | None] | None = None


def configure(fmt: LogFormat = "console", level: str = "info", stream: TextIO | None = None) -> None:
    import logging

    import structlog

    global _pending
    _pending = None
    stream = stream or sys.stderr
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        renderer: structlog.typing.Processor = structlog.processors.JSONRenderer()
        shared += [structlog.processors.dict_tracebacks]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )


def configure_lazily(fmt: LogFormat = "console", level: str = "info", stream: TextIO | None = None) -> None:
    """`configure(...)` when the first line at `level` or above is written through a
    `get_logger()` logger; until then structlog is not imported."""
    global _pending
    _pending = (fmt, level, stream)


def _noop(*_args: Any, **_kw: Any) -> None:
    return None


class _LazyLogger:
    """structlog's logger, imported (and configured, after `configure_lazily`) on first real use."""

    __slots__ = ("_real",)

    def __init__(self) -> None:
        self._real: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._real is None:
            if _pending is not None and "structlog" not in sys.modules \
                    and _LEVELS.get(name, 100) < _LEVELS.get(_pending[1], 20):
                return _noop  # below the level that will be configured: nothing to write
            if _pending is not None:
                configure(*_pending)
            import structlog

            self._real = structlog.get_logger()
        return getattr(self._real, name)


def get_logger() -> Any:
    """A module's logger (`log = get_logger()` at import) that costs nothing until it writes."""
    return _LazyLogger()
