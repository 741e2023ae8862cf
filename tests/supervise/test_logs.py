import io
import json

import trio

from supervisor.supervise.logs import Console, ContainerLog, pump


def test_console_prefix_colour_and_plain():
    out = io.BytesIO()
    c = Console(out=out, prefix=True, colour=False, width=7)
    c.line("web", "web-1", b"hello")
    assert out.getvalue() == b"web-1   | hello\n"
    out = io.BytesIO()
    Console(out=out, prefix=True, colour=True).line("web", "web-1", b"x")
    assert out.getvalue() == b"\x1b[36mweb-1 | \x1b[0mx\n"
    out = io.BytesIO()
    Console(out=out, prefix=False).line("web", "web-1", b"x")
    assert out.getvalue() == b"x\n"


def test_kept_log_rotates_at_size(tmp_path):
    log = ContainerLog(str(tmp_path / "logs" / "c.log"), max_bytes=200, keep=2)
    for i in range(20):
        log.write("stdout", f"line {i}".encode())
    log.close()
    names = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert names == ["c.log", "c.log.1", "c.log.2"]
    last = [json.loads(x) for x in (tmp_path / "logs" / "c.log").read_text().splitlines()]
    assert last[-1]["line"] == "line 19" and last[-1]["stream"] == "stdout"
    assert all(p.stat().st_size <= 200 for p in (tmp_path / "logs").iterdir())


async def test_pump_splits_lines_and_flushes_the_tail(tmp_path):
    send, recv = trio.testing.memory_stream_one_way_pair()
    out = io.BytesIO()
    kept = ContainerLog(str(tmp_path / "c.log"))
    async with trio.open_nursery() as n:
        n.start_soon(pump, recv, "stderr", "db", "db-1", Console(out=out), kept)
        await send.send_all(b"one\ntw")
        await send.send_all(b"o\r\nthree")
        await send.aclose()
    assert out.getvalue() == b"db-1 | one\ndb-1 | two\ndb-1 | three\n"
    kept.close()
    assert [json.loads(x)["line"] for x in (tmp_path / "c.log").read_text().splitlines()] == ["one", "two", "three"]


async def _written(out: io.BytesIO, expected: bytes) -> None:
    with trio.fail_after(5):
        while out.getvalue() != expected:
            await trio.sleep(0.001)


async def test_console_with_its_writer_buffers_drops_beyond_the_cap_and_says_so():
    out = io.BytesIO()
    c = Console(out=out, prefix=False, buffer_bytes=12)
    async with trio.open_nursery() as n:
        await n.start(c.run)
        for i in range(4):
            c.line("web", "web-1", f"line{i}".encode())  # 6 bytes each: two fit
        assert out.getvalue() == b"" and c.dropped == 2  # nothing written from the caller's task
        await _written(out, b"line0\nline1\n")  # by the worker thread (wait_all_tasks_blocked does not wait for it)
        c.line("web", "web-1", b"later")
        await _written(out, b"line0\nline1\n[pysup: 2 lines of container output dropped: stdout too slow]\nlater\n")
        n.cancel_scope.cancel()
    assert out.getvalue() == (b"line0\nline1\n[pysup: 2 lines of container output dropped: stdout too slow]\n"
                              b"later\n")
