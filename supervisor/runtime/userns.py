"""Host id ranges for user namespaces: one range per container, never shared while both live.

A container with a user namespace (`userns_mode`/`x-pysup.userns`, `pysup run --userns auto`) sees
ids 0..65535 mapped onto `count` host ids starting at `first`. Ranges come from root's entries in
/etc/subuid and /etc/subgid (the ranges present in both, so a container's uid and gid maps are the
same), or, when root has none, from pysup's own reserved range (RESERVED: 65536-id slices from
1,500,000,000 up to 2^31, clear of the usual /etc/subuid allocations at 100000 + 65536·n and of
systemd's dynamic users).

Allocations are recorded in `<state root>/userns/allocations.json` (flock'd, rewritten atomically)
with the owning process (pid and start time): `release(container)` frees one; an allocation whose
owner is gone (a crashed `pysup run` or supervisor) is reclaimed by the next `allocate`. A
container whose processes could not all be stopped (stuck in the kernel) hands its range over to
them (`release(container, kept_by=pids)`): it stays taken, under a name of its own
(`kept:<container>:<first id>`), until they are gone, whoever the owner was.

    first, count = allocate("web-1")      # (1500000000, 65536)
    ...
    release("web-1")

Standard library only (the one-shot `pysup run` path).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .. import paths
from ..atomic import write_json
from ..errors import PysupError

SIZE = 65536
RESERVED = (1_500_000_000, (1 << 31) - 1_500_000_000)  # (first, count)


class UsernsError(PysupError):
    """No host id range could be allocated (or the record is unreadable)."""


def parse_subid(text: str, user: str = "root", uid: int = 0) -> list[tuple[int, int]]:
    """The (first, count) ranges of `user` (or its numeric `uid`) in a /etc/subuid-style text."""
    out = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in (user, str(uid)):
            continue
        try:
            first, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if first > 0 and count > 0:
            out.append((first, count))
    return sorted(out)


def _intersect(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for fa, ca in a:
        for fb, cb in b:
            lo, hi = max(fa, fb), min(fa + ca, fb + cb)
            if hi > lo:
                out.append((lo, hi - lo))
    return sorted(out)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""
    except OSError as e:
        raise UsernsError(f"read {path}: {e.strerror}") from None


def host_ranges(subuid: str = "/etc/subuid", subgid: str = "/etc/subgid") -> tuple[list[tuple[int, int]], str]:
    """The ranges containers may use and where they come from ("/etc/subuid" or "reserved")."""
    uids, gids = parse_subid(_read(subuid)), parse_subid(_read(subgid))
    if not uids and not gids:
        return [RESERVED], "reserved"
    common = _intersect(uids, gids)
    if not common:
        raise UsernsError(f"root's ranges in {subuid} and {subgid} have no ids in common; "
                          "give root the same range in both")
    return common, subuid


def _state_dir(environ: Mapping[str, str] | None) -> str:
    return os.path.join(paths.state_root(environ), "userns")


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _owner_alive(entry: Mapping[str, Any]) -> bool:
    pid, start = entry.get("pid"), entry.get("start")
    return isinstance(pid, int) and start is not None and _start_time(pid) == start


def _live_keepers(entry: Mapping[str, Any]) -> list[dict[str, int]]:
    """The processes (pid and start time) the range was kept for that still run."""
    keepers = entry.get("keepers")
    if not isinstance(keepers, list):
        return []
    return [k for k in keepers if isinstance(k, dict) and isinstance(k.get("pid"), int)
            and k.get("start") is not None and _start_time(k["pid"]) == k["start"]]


def _keep(data: dict[str, Any], name: str, entry: Mapping[str, Any], keepers: list[dict[str, int]]) -> None:
    """Record `entry`'s range as held by `keepers` alone, under a name no allocation asks for and
    no other kept range has (ranges never overlap: the first id tells them apart)."""
    data[f"kept:{name}:{entry['first']}"] = {"first": entry["first"], "count": entry["count"],
                                             "source": entry.get("source"), "keepers": keepers}


def _reclaim(data: dict[str, Any]) -> None:
    """Drop the ranges nothing uses any more. One whose owner died (a crashed pysup) while
    processes it was kept for still run stays theirs, under a `kept:` name, so that its own name
    (a service's shared range) can be allocated anew."""
    for name in list(data):
        entry = data[name]
        if _owner_alive(entry):
            continue
        live = _live_keepers(entry)
        if name.startswith("kept:") and live:
            continue
        del data[name]
        if live:
            _keep(data, name, entry, live)


class _Record:
    """The allocation file, locked for the duration of a `with`."""

    def __init__(self, environ: Mapping[str, str] | None):
        self.dir = _state_dir(environ)
        self.path = os.path.join(self.dir, "allocations.json")

    def __enter__(self) -> dict[str, Any]:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            with open(self.path) as f:
                self.data = json.load(f)
            if not isinstance(self.data, dict):
                raise ValueError("not an object")
        except FileNotFoundError:
            self.data = {}
        except (OSError, ValueError) as e:
            os.close(self.fd)
            raise UsernsError(f"user namespace allocations {self.path}: unreadable ({e})") from None
        return self.data

    def save(self) -> None:
        write_json(self.path, self.data, durable=True, indent=1, sort_keys=True)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def allocate(container: str, *, size: int = SIZE, environ: Mapping[str, str] | None = None,
             owner_pid: int | None = None, subuid: str = "/etc/subuid", subgid: str = "/etc/subgid",
             holder: str | None = None) -> tuple[int, int]:
    """A free (first, count) host range for `container`, recorded until `release(container)` or
    until `owner_pid` (default: this process) is gone. The same container twice: UsernsError.

    With `holder`, `container` names a range shared by several holders (`x-pysup.userns: true`:
    the replicas of one service): the first holder allocates it, later ones (of the same owner)
    join it, and it is freed when the last one releases it."""
    ranges, source = host_ranges(subuid, subgid)
    pid = owner_pid or os.getpid()
    rec = _Record(environ)
    with rec as data:
        _reclaim(data)  # owners that died without releasing
        entry = data.get(container)
        if entry is not None and holder is not None and "holders" in entry and entry.get("pid") == pid:
            if holder not in entry["holders"]:
                entry["holders"].append(holder)
                rec.save()
            return entry["first"], entry["count"]
        if entry is not None:
            raise UsernsError(f"container {container} has a user namespace range already")
        used = sorted((e["first"], e["first"] + e["count"]) for e in data.values())
        for first, count in ranges:
            start, end = first, first + count
            cand = start
            for lo, hi in used:
                if hi <= cand or lo >= end:
                    continue
                if lo - cand >= size:
                    break
                cand = max(cand, hi)
            if cand + size <= end:
                data[container] = {"first": cand, "count": size, "pid": pid, "start": _start_time(pid),
                                   "source": source}
                if holder is not None:
                    data[container]["holders"] = [holder]
                rec.save()
                return cand, size
        raise UsernsError(f"no free range of {size} host ids left for a user namespace ({source}: "
                          f"{', '.join(f'{f}+{c}' for f, c in ranges)}; {len(data)} in use)")


def release(container: str, *, environ: Mapping[str, str] | None = None, holder: str | None = None,
            kept_by: Sequence[int] = ()) -> None:
    """Free the range of `container` (missing is fine); with `holder`, only that holder's share:
    the range goes with its last holder. `kept_by`: processes of the container that could not be
    stopped (stuck in the kernel) and so still run with its ids: the range stays taken until they
    are gone (a container given it meanwhile could reach their files, and they its), under a name
    of its own so that `container` can be allocated a new one."""
    rec = _Record(environ)
    with rec as data:
        entry = data.get(container)
        if entry is None:
            return
        keepers = [{"pid": pid, "start": start} for pid in kept_by if (start := _start_time(pid)) is not None]
        if keepers:
            entry["keepers"] = [*entry.get("keepers", ()), *keepers]
        if holder is not None and "holders" in entry:
            if holder in entry["holders"]:
                entry["holders"].remove(holder)
            if entry["holders"]:
                rec.save()
                return
        del data[container]
        live = _live_keepers(entry)
        if live:
            _keep(data, container, entry, live)
        rec.save()


def allocations(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    with _Record(environ) as data:
        return dict(data)


def wanted(service: Any) -> bool:
    """Does a compose service ask for a user namespace (`userns_mode` other than host, or
    `x-pysup.userns: true|auto`)?"""
    if service.userns_mode == "host":
        return False
    return service.userns_mode not in (None, "") or bool(service.x.userns)


def per_container(service: Any) -> bool:
    """`auto` (`x-pysup.userns: auto`, `userns_mode: auto`): a range of its own for every container
    (replica), like podman's --userns=auto. Otherwise one range per service, shared by its replicas."""
    return service.x.userns == "auto" or service.userns_mode == "auto"


def range_for(project: str, service: Any, container: str, *, environ: Mapping[str, str] | None = None) -> tuple[
        tuple[int, int], Any]:
    """The host range of one container of a `pysup up` stack, and the call that gives it back
    (when the container is removed; `kept_by` its processes that would not stop): `auto`
    allocates `container` its own; otherwise the service's range (`<project>/<service>`) is
    joined."""
    if per_container(service):
        name, holder = container, None
    else:
        name, holder = f"service:{project}/{service.name}", container
    got = allocate(name, environ=environ, holder=holder)

    def give_back(kept_by: Sequence[int] = ()) -> None:
        release(name, environ=environ, holder=holder, kept_by=kept_by)

    return got, give_back
