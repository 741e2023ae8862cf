"""The spec watcher on a real inotify (no root needed): saves by rename and in place, bursts
debounced, other files in the directory ignored; the reload loop keeps the running stack on an
invalid save and applies the next good one."""

import os
import textwrap

import trio

from supervisor.config.load import load
from supervisor.supervise.watch import SpecWatcher, watch_spec


async def next_change(w, timeout=5):
    with trio.fail_after(timeout):
        return await w.next_change(debounce=0.05)


async def test_in_place_write_and_rename_are_seen_once_per_burst(tmp_path):
    f = tmp_path / "compose.yaml"
    f.write_text("a")
    w = SpecWatcher([str(f)])
    try:
        async with trio.open_nursery() as n:
            got = []

            async def collect():
                while True:
                    got.append(await w.next_change(debounce=0.1))

            n.start_soon(collect)
            await trio.sleep(0.05)
            with open(f, "w") as out:  # truncate, write, write, close: one burst
                out.write("b")
                out.flush()
                out.write("c")
            await trio.sleep(0.3)
            assert got == [{str(f)}]
            (tmp_path / "other.txt").write_text("x")  # not watched
            await trio.sleep(0.3)
            assert len(got) == 1
            tmp = tmp_path / ".compose.yaml.swp"  # vim-like: write a new file, rename it over
            tmp.write_text("d")
            os.rename(tmp, f)
            await trio.sleep(0.3)
            assert got[1] == {str(f)}
            n.cancel_scope.cancel()
    finally:
        w.close()


async def test_watched_set_follows_the_sources(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "sub" / "b.env"
    b.parent.mkdir()
    a.write_text("1")
    b.write_text("1")
    w = SpecWatcher([str(a)])
    try:
        w.set_files([str(a), str(b)])
        assert w.files == [str(a), str(b)]
        b.write_text("2")
        assert await next_change(w) == {str(b)}
        w.set_files([str(a)])
        assert w.files == [str(a)]
    finally:
        w.close()


class FakeSup:
    def __init__(self, stack):
        self.stack = stack
        self.submitted = []

    def submit(self, stack):
        self.submitted.append(stack)


async def test_invalid_save_is_reported_and_kept_then_the_next_good_one_applies(tmp_path, capsys):
    f = tmp_path / "compose.yaml"

    def write(body):
        f.write_text("name: p\n" + textwrap.dedent(body))

    write("services:\n  web: {image: busybox, command: [a]}\n")

    def reload():
        return load([str(f)], environ={})

    sup = FakeSup(reload().stack)
    async with trio.open_nursery() as n:
        await n.start(lambda task_status: watch_spec(sup, reload, sup.stack.sources, debounce=0.05, hup=False,
                                                     task_status=task_status))
        write("services:\n  web: {image: busybox, command: [a], deploy: {replicas: -1}}\n")
        await trio.sleep(0.5)
        assert sup.submitted == []
        err = capsys.readouterr().err
        assert "keeping the running stack" in err and "compose.yaml:3:" in err and "services.web.deploy.replicas" in err
        write("services:\n  web: {image: busybox, command: [b]}\n")
        with trio.fail_after(5):
            while not sup.submitted:
                await trio.sleep(0.02)
        assert sup.submitted[-1].services["web"].command == ("b",)
        n.cancel_scope.cancel()
