"""A container that cannot start under `pysup up` says so in one line that names the service, the
spec key and where that key is (file:line:col), like a spec error: a missing rootfs, an unknown
user, a missing command, a bad mount source."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.root

STACK = """
services:
  norootfs:
    x-pysup: {rootfs: /nonexistent-pysup-test/root}
    command: ["true"]
  baduser:
    x-pysup: {rootfs: ROOTFS}
    user: pysup-test-nosuchuser
    command: ["true"]
  nocmd:
    x-pysup: {rootfs: ROOTFS}
    command: ["/bin/pysup-test-nosuchcmd", "x"]
  badmount:
    x-pysup: {rootfs: ROOTFS}
    command: ["true"]
    volumes:
      - type: bind
        source: /nonexistent-pysup-test/src
        target: /mnt/x
  badshort:
    x-pysup: {rootfs: ROOTFS}
    command: ["true"]
    volumes: ["/nonexistent-pysup-test/short:/mnt/y"]
"""


def _where(text: str, needle: str, after: str = "") -> str:
    """line:col (1-based) of the first `needle` in `text` (after the line holding `after`)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if after in line) if after else 0
    for i in range(start, len(lines)):
        col = lines[i].find(needle)
        if col >= 0:
            return f"{i + 1}:{col + 1}"
    raise AssertionError(needle)


def test_start_failures_name_the_service_key_and_its_place(up_env):
    compose = up_env.write(STACK)
    text = compose.read_text()
    u = up_env.up(None)
    for service in ("norootfs", "baduser", "nocmd", "badmount", "badshort"):
        u.wait_event("replica.start_failed", timeout=20, service=service)
    errors = {e["service"]: e["error"] for e in u.events() if e.get("event") == "replica.start_failed"}
    assert u.wait(20) == 1  # every replica gave up: the run ends, failed (compose's `up` fails too)
    ended = next(e for e in u.events() if e.get("event") == "up.start_failed")
    assert ended["replicas"] == sorted(f"{s}-1" for s in ("norootfs", "baduser", "nocmd", "badmount", "badshort"))
    f = str(compose)

    def at(needle: str, after: str = "") -> str:
        return f"{f}:{_where(text, needle, after)}"

    def check(service: str, expected: str) -> None:
        got = errors[service]
        # the file as the loader shows it (relative to the working directory when inside it)
        assert got.replace(f"{up_env.tmp}/", "") == expected.replace(f"{up_env.tmp}/", ""), got

    check("norootfs", f"{at('/nonexistent-pysup-test/root')}: services.norootfs.x-pysup.rootfs: "
                      "rootfs /nonexistent-pysup-test/root: not a directory")
    check("baduser", f"{at('pysup-test-nosuchuser')}: services.baduser.user: user: unable to find user "
                     "pysup-test-nosuchuser: no matching entries in passwd file")
    check("nocmd", f"{at('[', after='pysup-test-nosuchcmd')}: services.nocmd.command: "
                   'exec "/bin/pysup-test-nosuchcmd": ENOENT (No such file or directory)')
    check("badmount", f"{at('/nonexistent-pysup-test/src')}: services.badmount.volumes[0].source: "
                      "mount /mnt/x: bind mount source /nonexistent-pysup-test/src does not exist")
    short = at('"/nonexistent-pysup-test/short')  # a short item: the string's own place
    check("badshort", f"{short}: services.badshort.volumes[0].source: "
                      "mount /mnt/y: bind mount source /nonexistent-pysup-test/short does not exist")
