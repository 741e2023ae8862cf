"""The launcher ↔ zygote protocol, version 1 (specs/runtime-protocol.md has the full table).

One AF_UNIX SOCK_SEQPACKET socketpair: the kernel keeps message boundaries, so one message is one
datagram, a UTF-8 JSON object `{"v": 1, "type": ..., ...}`, with file descriptors attached as
SCM_RIGHTS where the table says so.

    launcher (trio)                         zygote (sync, python -m supervisor.runtime.zygote)
    ───────────────                         ──────────────────────────────────────────────────
                                   ◄──────  hello    {pid}
                                   ◄──────  spare    {pid}     (a PID 1 cloned ahead, ours to reap)
    start {id, spec} + fds [0,1,2] ──────►  clone PID 1 (or hand the spec to the spare) → execve
                                   ◄──────  started  {id, pid, warnings}     (it has exec'd)
                                   ◄──────  failed   {id, pid, stage, errno, message}
    exec {id, spec} + fds [0,1,2,pidfd] ─►  clone into the container's namespaces → execve
                                   ◄──────  started / failed, as for start
    shutdown {}                    ──────►  exits (EOF on the socket does the same)

Imports: standard library only.
"""

from __future__ import annotations

import array
import json
import socket

TYPE_CHECKING = False  # typing stays unimported: the zygote imports this module (~0.4 MB of its memory)
if TYPE_CHECKING:
    from typing import Any

VERSION = 1
MAX_MESSAGE = 1 << 20  # bytes; a spec is a few KiB
MAX_FDS = 8

# message types
HELLO = "hello"
START = "start"
STARTED = "started"
FAILED = "failed"
SHUTDOWN = "shutdown"
ERROR = "error"
SPARE = "spare"
EXEC = "exec"

TYPES = frozenset({HELLO, START, STARTED, FAILED, SHUTDOWN, ERROR, SPARE, EXEC})


class ProtocolError(Exception):
    pass


def encode(type_: str, **fields: Any) -> bytes:
    if type_ not in TYPES:
        raise ProtocolError(f"unknown message type {type_!r}")
    data = json.dumps({"v": VERSION, "type": type_, **fields}, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"{type_} message too large ({len(data)} bytes)")
    return data


def decode(data: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(data)
    except ValueError as e:
        raise ProtocolError(f"malformed message: {e}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("malformed message: not an object")
    if msg.get("v") != VERSION:
        raise ProtocolError(f"protocol version {msg.get('v')!r}, expected {VERSION}")
    if msg.get("type") not in TYPES:
        raise ProtocolError(f"unknown message type {msg.get('type')!r}")
    return msg


def fds_ancillary(fds: list[int]) -> list[tuple[int, int, bytes]]:
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []


def fds_from_ancillary(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, type_, data in ancdata:
        if level == socket.SOL_SOCKET and type_ == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return list(fds)


def check_flags(msg_flags: int, fds: list[int]) -> None:
    if msg_flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        import os

        for fd in fds:
            os.close(fd)
        raise ProtocolError("message or its file descriptors truncated")


# --- blocking helpers (the zygote side) -------------------------------------------------------


def send(sock: socket.socket, type_: str, fds: list[int] | None = None, **fields: Any) -> None:
    sock.sendmsg([encode(type_, **fields)], fds_ancillary(list(fds or ())))


def recv(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """One message and its fds, or None at EOF. The caller owns (must close) the fds."""
    data, ancdata, flags, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * 4))
    fds = fds_from_ancillary(ancdata)
    if not data and not fds:
        return None
    check_flags(flags, fds)
    return decode(data), fds
