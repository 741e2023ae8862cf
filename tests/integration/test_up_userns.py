"""User namespaces under `pysup up`: `x-pysup.userns: auto` gives every container a host id range
of its own, `true` one per service; ranges are recorded while the containers live and freed when
they are removed; host root's files bound into the container are its root's (idmapped mounts), and
so is a writable host directory bound with `:idmap`, where the container's root writes as host root."""

from __future__ import annotations

import json
import os
import re

import pytest

pytestmark = pytest.mark.root

STACK = """
services:
  auto:
    x-pysup: {rootfs: ROOTFS, userns: auto}
    deploy: {replicas: 2}
    stop_grace_period: 300ms
    command: ["/bin/sh", "-c", "echo map $$(cat /proc/self/uid_map); echo owner $$(stat -c %u /hostfile); touch /data/$$(hostname) && echo done; exec sleep 60"]
    volumes: ["HOSTFILE:/hostfile:ro", "DATADIR:/data:rw,idmap"]
  shared:
    x-pysup: {rootfs: ROOTFS, userns: true}
    deploy: {replicas: 2}
    stop_grace_period: 300ms
    command: ["/bin/sh", "-c", "echo map $$(cat /proc/self/uid_map); mkdir /sys/x 2>/dev/null && echo sys rw || echo sys $$(ls /sys | wc -l) ro; echo done; exec sleep 60"]
"""


def _maps(out: str) -> dict[str, tuple[int, int, int]]:
    return {m[1]: (int(m[2]), int(m[3]), int(m[4])) for m in re.finditer(r"^(\S+) *\| map (\d+) (\d+) (\d+)$", out, re.M)}


def test_auto_ranges_are_disjoint_per_container_and_freed(userns_env):
    hostfile = userns_env.tmp / "hostfile"
    hostfile.write_text("host root's\n")
    os.chown(hostfile, 0, 0)
    data = userns_env.tmp / "data"
    data.mkdir()
    os.chown(data, 0, 0)
    os.chmod(data, 0o755)
    u = userns_env.up(STACK.replace("HOSTFILE", str(hostfile)).replace("DATADIR", str(data)))
    names = ("auto-1", "auto-2", "shared-1", "shared-2")
    u.wait_for(lambda _e: all(re.search(rf"^{n} *\| done$", u.stdout(), re.M) for n in names), timeout=30,
               what="all four started")
    maps = _maps(u.stdout())
    assert set(maps) == set(names), u.stdout()
    assert all(inside == 0 and count == 65536 for inside, _host, count in maps.values())
    host = {n: maps[n][1] for n in names}
    assert host["shared-1"] == host["shared-2"]  # `true`: one range per service
    ranges = [(host[n], host[n] + 65536) for n in ("auto-1", "auto-2", "shared-1")]
    for i, (a, b) in enumerate(ranges):  # `auto`: a range of its own, overlapping no other
        assert all(b <= c or d <= a for c, d in ranges[i + 1:]), ranges
    # /sys: the network namespace is pysup's (owned by the host's user namespace), so no sysfs of
    # its own: the host's, bound read-only
    sys_lines = re.findall(r"^shared-\d *\| sys (.*)$", u.stdout(), re.M)
    assert len(sys_lines) == 2 and all(line.endswith(" ro") and line != "0 ro" for line in sys_lines), sys_lines
    # the bind-mounted file of host root is the container root's (an idmapped mount)
    assert re.findall(r"^auto-\d *\| owner (\d+)$", u.stdout(), re.M) == ["0", "0"]
    # `:idmap`: each replica's root wrote into host root's directory, as host root
    made = list(data.iterdir())
    assert len(made) == 2 and all((f.stat().st_uid, f.stat().st_gid) == (0, 0) for f in made), made
    record = json.loads((userns_env.tmp / "state" / "userns" / "allocations.json").read_text())
    assert sorted(v["first"] for v in record.values()) == sorted({host[n] for n in names})
    assert all(v["pid"] == u.proc.pid for v in record.values())
    assert u.stop() == 0
    record = json.loads((userns_env.tmp / "state" / "userns" / "allocations.json").read_text())
    assert record == {}, "ranges are freed with their containers"
