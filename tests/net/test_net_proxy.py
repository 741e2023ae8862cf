"""The published-port TCP relay for real, on loopback only (127.0.0.2-4 as the "replicas"): data
both ways with back-pressure and half-close, a refused backend skipped, the balancing counts,
and the port closed when the proxy is cancelled."""

from __future__ import annotations

import hashlib
import socket

import pytest
import trio

from supervisor.net.proxy import Balancer, PortInUse, TcpProxy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def backend(addr: str, port: int, name: bytes, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Says its name, then returns the sha256 of everything it read once the client half-closes."""
    listeners = await trio.open_tcp_listeners(port, host=addr)

    async def handle(s: trio.SocketStream) -> None:
        async with s:
            await s.send_all(name + b"\n")
            h = hashlib.sha256()
            while data := await s.receive_some(1 << 16):
                h.update(data)
            await s.send_all(h.hexdigest().encode())

    await trio.serve_listeners(handle, listeners, task_status=task_status)


async def exchange(port: int, payload: bytes, slow: bool = False) -> tuple[bytes, bytes]:
    s = await trio.open_tcp_stream("127.0.0.1", port)
    async with s:
        async def send() -> None:
            await s.send_all(payload)
            await s.send_eof()

        got = b""
        async with trio.open_nursery() as n:
            n.start_soon(send)
            while data := await s.receive_some(1 << 16):
                got += data
                if slow:
                    await trio.sleep(0.001)
    name, _, digest = got.partition(b"\n")
    return name, digest


async def test_relay_carries_data_both_ways_and_balances():
    port, target = free_port(), free_port()
    addrs = ["127.0.0.4", "127.0.0.2", "127.0.0.3"]  # .4: nobody listens (refused), skipped
    balancer = Balancer(lambda: list(addrs))
    proxy = TcpProxy("127.0.0.1", port, target, balancer)
    async with trio.open_nursery() as n:
        await n.start(backend, "127.0.0.2", target, b"two")
        await n.start(backend, "127.0.0.3", target, b"three")
        await n.start(proxy.serve)
        big = bytes(range(256)) * (32 * 1024)  # 8 MiB: the relay's writes block, reads pause
        name, digest = await exchange(port, big, slow=False)
        assert name in (b"two", b"three")
        assert digest == hashlib.sha256(big).hexdigest().encode()
        names = [(await exchange(port, b"x"))[0] for _ in range(6)]
        assert set(names) == {b"two", b"three"}  # round-robin, the refused one skipped
        with trio.fail_after(5):  # the relay sees the clients' closes a moment after they read EOF
            while any(balancer.active.values()):
                await trio.sleep(0.01)

        # least-connections: an open connection counts against its backend
        lc = Balancer(lambda: ["127.0.0.2", "127.0.0.3"], "least-connections")
        proxy.balancer = lc  # read per connection (a live edit does this)
        held = await trio.open_tcp_stream("127.0.0.1", port)
        first = (await held.receive_some(100)).strip()
        with trio.fail_after(5):
            while sum(lc.active.values()) != 1:
                await trio.sleep(0.01)
        others = set()
        for _ in range(4):
            others.add((await exchange(port, b"y"))[0])
            with trio.fail_after(5):
                while sum(lc.active.values()) != 1:  # that one's close seen: only `held` counts
                    await trio.sleep(0.01)
        assert others == {b"two", b"three"} - {first}
        await held.aclose()
        with trio.fail_after(5):
            while sum(lc.active.values()) != 0:
                await trio.sleep(0.01)
        n.cancel_scope.cancel()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_no_backend_closes_the_client_and_a_port_in_use_is_refused():
    port = free_port()
    proxy = TcpProxy("127.0.0.1", port, 1, Balancer(lambda: []), who="services.web.ports[0]: ")
    async with trio.open_nursery() as n:
        await n.start(proxy.serve)
        s = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(5):
            assert await s.receive_some(10) == b""
        await s.aclose()
        other = TcpProxy("127.0.0.1", port, 1, Balancer(lambda: []), who="services.web.ports[0]: ")
        with pytest.raises(PortInUse, match=rf"services\.web\.ports\[0\]: 127\.0\.0\.1:{port}/tcp: Address already in use"):
            await other.bind()
        n.cancel_scope.cancel()


async def test_a_slow_client_gets_all_of_a_reply_after_both_sides_closed():
    """The client half-closes, the backend answers with more than the socket buffers hold and
    closes: the upstream socket is then hung up (both directions shut) with data still unread
    while the client drains slowly; all of it arrives."""
    port, target = free_port(), free_port()
    body = bytes(range(256)) * (16 * 1024)  # 4 MiB

    async def big(task_status=trio.TASK_STATUS_IGNORED) -> None:
        async def handle(s: trio.SocketStream) -> None:
            async with s:
                while await s.receive_some(1 << 16):
                    pass
                await s.send_all(body)

        await trio.serve_listeners(handle, await trio.open_tcp_listeners(target, host="127.0.0.5"),
                                   task_status=task_status)

    proxy = TcpProxy("127.0.0.1", port, target, Balancer(lambda: ["127.0.0.5"]))
    async with trio.open_nursery() as n:
        await n.start(big)
        await n.start(proxy.serve)
        s = await trio.open_tcp_stream("127.0.0.1", port)
        async with s:
            await s.send_all(b"request")
            await s.send_eof()
            await trio.sleep(0.2)  # the backend has written and closed, the relay is paused
            got = bytearray()
            with trio.fail_after(10):
                while data := await s.receive_some(1 << 14):
                    got += data
                    await trio.sleep(0.0005)
        assert len(got) == len(body) and bytes(got) == body
        n.cancel_scope.cancel()
