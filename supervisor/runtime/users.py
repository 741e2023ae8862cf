"""`user:` resolution against the container's own /etc/passwd and /etc/group (runc's GetExecUser).

"name", "uid", "name:group", "uid:gid" and mixes. A numeric user missing from passwd is fine (gid 0,
home "/"); a name missing is an error. Supplementary groups: every group in /etc/group that lists
the user by name, unless a group was given explicitly (then only that one). Pure: reads the files
given, so it runs after pivot_root on "/etc/passwd" and in tests on tmp files.
"""

from __future__ import annotations

from .record import record


class UserError(Exception):
    pass


@record
class ExecUser:
    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    home: str = "/"
    name: str | None = None


def _read(path: str) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except (FileNotFoundError, NotADirectoryError):
        return []


def resolve_user(spec: str | None, passwd: str = "/etc/passwd", group: str = "/etc/group") -> ExecUser:
    if not spec:
        spec = "0"
    user, _, grp = spec.partition(":")
    if not user:
        raise UserError(f"invalid user {spec!r}")
    entry = None
    for fields in _read(passwd):
        if len(fields) < 7:
            continue
        if fields[0] == user or (user.isdigit() and fields[2] == user):
            entry = fields
            break
    if entry is None:
        if not user.isdigit():
            raise UserError(f"unable to find user {user}: no matching entries in passwd file")
        uid, gid, home, name = int(user), 0, "/", None
    else:
        try:
            uid, gid = int(entry[2]), int(entry[3])
        except ValueError:
            raise UserError(f"invalid passwd entry for {user}") from None
        home, name = entry[5] or "/", entry[0]
    groups_file = _read(group)
    if grp:
        found = None
        for fields in groups_file:
            if len(fields) >= 3 and (fields[0] == grp or (grp.isdigit() and fields[2] == grp)):
                found = int(fields[2])
                break
        if found is None:
            if not grp.isdigit():
                raise UserError(f"unable to find group {grp}: no matching entries in group file")
            found = int(grp)
        return ExecUser(uid, found, (found,), home, name)
    extra: list[int] = []
    if name:
        for fields in groups_file:
            if len(fields) >= 4 and name in fields[3].split(","):
                try:
                    g = int(fields[2])
                except ValueError:
                    continue
                if g not in extra:
                    extra.append(g)
    groups = tuple([gid] + [g for g in extra if g != gid])
    return ExecUser(uid, gid, groups, home, name)
