"""structlog set-up: one call at start-up, console for people, JSON on request.

Modules take `log = structlog.get_logger()` at import and bind context (service, replica,
container) with `structlog.contextvars.bound_contextvars` before starting a task; trio copies the
context into child tasks, so every line of a replica's subtree carries it. Only the synchronous log
methods are used: structlog's async ones need asyncio.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["console", "json"]


def configure(fmt: LogFormat = "console", level: str = "info", stream: TextIO | None = None) -> None:
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
