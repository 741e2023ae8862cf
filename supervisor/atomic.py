"""Writing a small state file so that a reader (or the next run after a crash) sees the old
content or the new, never half of it: write a temporary file beside it, then rename over it; and
reading such a record back."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any


def write_json(path: str, data: Any, *, durable: bool = False, **dump: Any) -> None:
    """`data` as JSON at `path`, atomically. `durable` also fsyncs before the rename (for records
    that must survive a power cut, at the cost of a disk flush); `dump` goes to json.dump."""
    tmp = f"{path}.{os.getpid()}.tmp"  # per process: two writers never share a temporary file
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, **dump)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_record(path: str, unreadable: Callable[[str], None]) -> dict[str, Any]:
    """The JSON object `write_json` left at `path`, {} when there is none. One that cannot be read,
    or is not an object (edited by hand), is reported to `unreadable` (why) and read as {}."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        unreadable(str(exc))
        return {}
    if not isinstance(data, dict):
        unreadable(f"not a JSON object but {type(data).__name__}")
        return {}
    return data
