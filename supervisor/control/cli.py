"""The CLI side of the control API: `pysup ps|logs|exec|stats|events|stop|start|restart|kill|
pause|unpause|down|top`. Each command finds the stack (`-p NAME`, else the project name of `-f
FILE` or the compose file in the current directory), talks to its `pysup up` through
`client.Client` and prints. No trio or structlog: `pysup ps` must start fast.
`logs` reads the kept log files directly (they outlive the run). Tables are plain columns, with
a bold header and coloured states on a terminal (not rich: its import and layout would take
~60 ms of `ps`'s 100 ms budget with 100 replicas).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from ..errors import PysupError


def add_parsers(sub: Any, project_options: Any) -> None:
    def stack_parser(name: str, help: str, *, files: bool = True, **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=kw.pop("description", help[0].upper() + help[1:] + "."), **kw)
        if files:
            project_options(p, top=False)
        else:  # `-f` means --follow here (as in compose): give -f FILE before the command
            p.add_argument("-p", "--project-name", metavar="NAME", default=argparse.SUPPRESS,
                           help="project name (default: from the compose file)")
        return p

    ps = stack_parser("ps", "list the replicas of the running stack")
    ps.add_argument("-a", "--all", action="store_true", help="also replicas that have ended or were stopped")
    ps.add_argument("--format", choices=("table", "json"), default="table")
    ps.add_argument("services", nargs="*", metavar="SERVICE")
    ps.set_defaults(handler=cmd_ps)

    logs = stack_parser("logs", "show the kept container output", files=False)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new output while the stack runs")
    logs.add_argument("-n", "--tail", metavar="N", default="all",
                      help="the last N lines of each replica (default: all)")
    logs.add_argument("--since", metavar="T",
                      help="only after T: a Unix time, an ISO time or a duration ago (10s, 5m, 2h)")
    logs.add_argument("-t", "--timestamps", action="store_true", help="prefix each line with its time")
    logs.add_argument("--no-log-prefix", action="store_true", help="no `service-N | ` prefix")
    logs.add_argument("targets", nargs="*", metavar="SERVICE[.N]")
    logs.set_defaults(handler=cmd_logs)

    ex = stack_parser("exec", "run a command inside a running replica",
                      usage="pysup exec [-e K=V] [-u USER] [-w DIR] SERVICE[.N] [--] CMD [ARG...]")
    ex.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    ex.add_argument("-u", "--user", metavar="USER[:GROUP]")
    ex.add_argument("-w", "--workdir", metavar="DIR")
    ex.add_argument("target", metavar="SERVICE[.N]")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD")
    ex.set_defaults(handler=cmd_exec)

    st = stack_parser("stats", "live CPU, memory, pids and I/O of each replica")
    st.add_argument("--no-stream", action="store_true", help="print one sample and exit")
    st.add_argument("--format", choices=("table", "json"), default="table")
    st.set_defaults(handler=cmd_stats)

    ev = stack_parser("events", "a live stream of the stack's lifecycle events")
    ev.add_argument("--format", choices=("text", "json"), default="text")
    ev.set_defaults(handler=cmd_events)

    for name, help in (("stop", "stop replicas; they stay stopped until started"),
                       ("start", "start stopped replicas"), ("restart", "stop and start replicas"),
                       ("kill", "send a signal to replicas' main process"),
                       ("pause", "freeze replicas' processes"), ("unpause", "thaw paused replicas")):
        p = stack_parser(name, help)
        if name == "kill":
            p.add_argument("-s", "--signal", default="SIGKILL", help="the signal (default: SIGKILL)")
        p.add_argument("targets", nargs="+", metavar="SERVICE[.N]")
        p.set_defaults(handler=cmd_lifecycle, op=name)

    down = stack_parser("down", "stop the running stack gracefully; `pysup up` exits")
    down.add_argument("-t", "--timeout", type=float, metavar="SECONDS",
                      help="SIGKILL what still runs after this (default: each service's stop_grace_period)")
    down.set_defaults(handler=cmd_down)

    top = stack_parser("top", "the processes inside replicas")
    top.add_argument("targets", nargs="+", metavar="SERVICE[.N]")
    top.set_defaults(handler=cmd_top)


# --- finding the stack ---------------------------------------------------------------------------

def project_of(args: argparse.Namespace) -> str:
    name = getattr(args, "project_name", None) or fast_project_name(args)
    if name:
        return name
    from ..cli import _load

    return _load(args).name


DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")  # config.load's


def fast_project_name(args: argparse.Namespace, environ: Any = None, cwd: str | None = None) -> str | None:
    """The project name of the compose files without loading the stack (the loader costs ~50 ms
    of a ~40 ms `ps`): a top-level `name: literal` (the last file's wins), else the first file's
    directory name. None whenever in doubt (interpolation, --env-file, COMPOSE_* variables, a .env
    that may set the name, flow-style YAML, no file here): then the full loader decides."""
    import re

    env = os.environ if environ is None else environ
    if getattr(args, "env_files", None) or getattr(args, "project_directory", None) \
            or env.get("COMPOSE_PROJECT_NAME") or env.get("COMPOSE_FILE"):
        return None
    cwd = cwd or os.getcwd()
    files = [os.path.join(cwd, f) for f in (getattr(args, "files", None) or ())]
    if not files:
        found = next((os.path.join(cwd, f) for f in DEFAULT_FILES if os.path.isfile(os.path.join(cwd, f))), None)
        if found is None:
            return None
        stem, ext = os.path.splitext(found)
        files = [found] + ([f"{stem}.override{ext}"] if os.path.isfile(f"{stem}.override{ext}") else [])
    if "-" in (getattr(args, "files", None) or ()):
        return None
    project_dir = os.path.dirname(os.path.abspath(files[0]))
    try:
        with open(os.path.join(project_dir, ".env"), "rb") as f:
            if b"COMPOSE_PROJECT_NAME" in f.read():
                return None
    except FileNotFoundError:
        pass
    except OSError:
        return None
    name = None
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError):
            return None
        if re.search(r"""^\s*[{"'\[]|^["']name["']\s*:|^<<\s*:""", text, re.MULTILINE):
            return None
        m = re.findall(r"^name[ \t]*:[ \t]*(.*?)[ \t]*(?:#.*)?$", text, re.MULTILINE)
        if m:
            value = m[-1]
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", value):
                return None
            name = value
    if name is None:
        name = re.sub(r"[^a-z0-9_-]", "", os.path.basename(project_dir).lower()).lstrip("_-") or None
    return name


def client(args: argparse.Namespace, timeout: float | None = 30.0):
    from .client import Client

    return Client.for_project(project_of(args), timeout=timeout)


# --- output --------------------------------------------------------------------------------------

def table(rows: list[tuple], out: Any = None) -> None:
    out = out or sys.stdout
    widths = [max(len(str(r[c])) for r in rows) for c in range(len(rows[0]))]
    out.write("".join("   ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() + "\n" for r in rows))


def duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def _state(r: dict) -> str:
    s = r["state"]
    if s == "restarting" and r.get("next_retry_in") is not None:
        s += f" (in {r['next_retry_in']:.1f}s)"
    if r.get("stopped") and s in ("exited", "oom-killed"):
        s += " (stopped)"
    return s


def _ports(r: dict) -> str:
    out = []
    for p in r.get("ports") or ():
        pub = p.get("published")
        head = ""
        if pub:
            head = (p.get("host_ip") + ":" if p.get("host_ip") else "") + (
                str(pub[0]) if pub[0] == pub[1] else f"{pub[0]}-{pub[1]}") + "->"
        out.append(f"{head}{p['target']}/{p['protocol']}")
    return ",".join(out) or "-"


# --- commands --------------------------------------------------------------------------------------

def cmd_ps(args: argparse.Namespace) -> int:
    rows = client(args).request("ps", {"all": args.all, "services": args.services})
    if args.format == "json":
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
        return 0
    out = [("NAME", "SERVICE", "STATE", "HEALTH", "PID", "UPTIME", "RESTARTS", "LAST EXIT", "IP", "PORTS")]
    for r in rows:
        last = r.get("last_exit")
        out.append((r["name"], r["service"], _state(r), r.get("health") or "-", r.get("pid") or "-",
                    duration(r.get("uptime")), r["restarts"], last["reason"] if last else "-", r.get("ip") or "-",
                    _ports(r)))
    if sys.stdout.isatty():
        tty_table(out, {2: STATE_STYLES, 3: STATE_STYLES})
    else:
        table(out)
    return 0


STATE_STYLES = {"running": "green", "healthy": "green", "starting": "yellow", "created": "yellow",
                "unhealthy": "red", "restarting": "red", "oom-killed": "red", "exited": "dim", "paused": "cyan",
                "stopping": "yellow"}


def tty_table(rows: list[tuple], styles: dict[int, dict[str, str]] | None = None) -> None:
    """`table` for a terminal: a bold header, states coloured. (Not rich itself: with 100 rows its
    import and layout cost ~60 ms, most of `pysup ps`'s 100 ms budget.)"""
    codes = {"green": "32", "yellow": "33", "red": "31", "dim": "2", "cyan": "36"}
    widths = [max(len(str(r[c])) for r in rows) for c in range(len(rows[0]))]
    out = []
    for n, r in enumerate(rows):
        cells = []
        for i, (v, w) in enumerate(zip(r, widths)):
            text = str(v).ljust(w) if i < len(r) - 1 else str(v)
            style = "1" if n == 0 else codes.get((styles or {}).get(i, {}).get(str(v).split(" ")[0], ""), "")
            cells.append(f"\x1b[{style}m{text}\x1b[0m" if style else text)
        out.append("   ".join(cells).rstrip() + "\n")
    sys.stdout.write("".join(out))


def cmd_lifecycle(args: argparse.Namespace) -> int:
    req: dict[str, Any] = {"targets": args.targets}
    if args.op == "kill":
        req["signal"] = args.signal
    result = client(args, timeout=None).request(args.op, req)
    key = {"stop": "stopped", "start": "started", "restart": "started", "kill": "killed", "pause": "paused",
           "unpause": "unpaused"}[args.op]
    for name in result.get(key, ()):
        print(name)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from .client import wait_gone

    project = project_of(args)
    from .client import Client

    Client.for_project(project).request("down", {"timeout": args.timeout})
    if not wait_gone(project, timeout=(args.timeout or 0) + 120):
        raise PysupError(f"stack {project!r} is still stopping")
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv.pop(0)
    if not argv:
        raise PysupError("no command given (pysup exec SERVICE[.N] -- CMD [ARG...])")
    env = {}
    for kv in args.env:
        k, eq, v = kv.partition("=")
        env[k] = v if eq else os.environ.get(k, "")
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            fds.append(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    result = client(args, timeout=None).request(
        "exec", {"target": args.target, "argv": argv, "env": env, "user": args.user, "workdir": args.workdir},
        fds=fds)
    if result.get("error"):
        print(f"pysup: {result['error']}", file=sys.stderr)
    return int(result["exit_code"])


def cmd_top(args: argparse.Namespace) -> int:
    rows = client(args).request("top", {"targets": args.targets})
    out = [("REPLICA", "PID", "PPID", "UID", "STATE", "COMMAND")]
    out += [(r["replica"], r["pid"], r["ppid"], r["uid"], r["state"], r["command"]) for r in rows]
    table(out)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    c = client(args)
    tty = sys.stdout.isatty()
    req = {"stream": not args.no_stream, "interval": 0.5 if args.no_stream else 1.0}
    for rows in c.stream("stats", req):
        if args.format == "json":
            sys.stdout.write(json.dumps(rows) + "\n")
        else:
            out = [("NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS", "BLOCK I/O")]
            for r in rows:
                cpu = "-" if r["cpu_percent"] is None else f"{r['cpu_percent']:.2f}%"
                mem = "-" if r["memory_percent"] is None else f"{r['memory_percent']:.2f}%"
                out.append((r["name"], cpu, f"{size(r['memory_used'])} / {size(r['memory_limit'])}", mem,
                            r["pids"] if r["pids"] is not None else "-",
                            f"{size(r['io_read'])} / {size(r['io_write'])}"))
            if tty and not args.no_stream:
                sys.stdout.write("\x1b[H\x1b[2J")
            tty_table(out) if tty else table(out)
        sys.stdout.flush()
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    for ev in client(args).stream("events"):
        if args.format == "json":
            sys.stdout.write(json.dumps(ev) + "\n")
        else:
            ev = dict(ev)
            t = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ev.pop("time", time.time())))
            name = ev.pop("event", "?")
            ev.pop("level", None)
            who = ""
            if "service" in ev:
                who = str(ev.pop("service")) + (f"-{ev.pop('replica')}" if "replica" in ev else "")
                ev.pop("container", None)
            rest = " ".join(f"{k}={v}" for k, v in ev.items() if v is not None)
            sys.stdout.write(f"{t} {name} {who} {rest}".rstrip() + "\n")
        sys.stdout.flush()
    return 0


# --- logs: read from the kept files ---------------------------------------------------------------

def parse_since(text: str, now: float | None = None) -> float:
    now = time.time() if now is None else now
    t = text.strip()
    try:
        return float(t)
    except ValueError:
        pass
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    for suffix in sorted(units, key=len, reverse=True):
        if t.endswith(suffix):
            try:
                return now - float(t[:-len(suffix)]) * units[suffix]
            except ValueError:
                break
    from datetime import datetime, timezone

    try:
        d = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise PysupError(f"--since {text}: not a Unix time, an ISO time or a duration (10s, 5m, 2h)") from None
    if d.tzinfo is None:
        d = d.astimezone()
    return d.astimezone(timezone.utc).timestamp()


def log_files(log_dir: str, project: str) -> dict[tuple[str, int], list[str]]:
    """(service, index) -> its kept files, oldest first."""
    out: dict[tuple[str, int], list[tuple[int, str]]] = {}
    try:
        names = os.listdir(log_dir)
    except FileNotFoundError:
        return {}
    prefix = f"{project}-"
    for name in names:
        if not name.startswith(prefix) or ".log" not in name:
            continue
        base, _, rot = name[len(prefix):].partition(".log")
        if rot and not (rot.startswith(".") and rot[1:].isdigit()):
            continue
        service, dash, index = base.rpartition("-")
        if not dash or not index.isdigit():
            continue
        out.setdefault((service, int(index)), []).append((int(rot[1:]) if rot else 0, os.path.join(log_dir, name)))
    return {k: [p for _, p in sorted(v, reverse=True)] for k, v in out.items()}


def _selected(key: tuple[str, int], targets: list[str]) -> bool:
    if not targets:
        return True
    from .protocol import parse_target

    for t in targets:
        if t == key[0]:
            return True
        name, index = parse_target(t)
        if (name, index) == key:
            return True
    return False


def _records(path: str, start: int = 0) -> tuple[list[dict], int]:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return [], start
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
    out = []
    for line in data[:end].splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out, start + end


def cmd_logs(args: argparse.Namespace) -> int:
    from .. import paths

    project = project_of(args)
    log_dir = os.path.join(paths.project_state_dir(project), "logs")
    since = parse_since(args.since) if args.since else None
    tail = None if args.tail in ("all", "-1") else int(args.tail)
    files = {k: v for k, v in log_files(log_dir, project).items() if _selected(k, args.targets)}
    if not files and not args.follow:
        from .client import Client

        if not os.path.isdir(log_dir) and not Client.for_project(project).running():
            raise PysupError(f"no stack {project!r} is running, and it has no kept logs")
    width = max((len(f"{s}-{i}") for s, i in files), default=0)

    def show(key: tuple[str, int], rec: dict) -> None:
        line = str(rec.get("line", ""))
        if args.timestamps:
            t = rec.get("t", 0)
            line = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z " + line
        if not args.no_log_prefix:
            line = f"{key[0]}-{key[1]}".ljust(width) + " | " + line
        sys.stdout.write(line + "\n")

    merged: list[tuple[float, int, tuple[str, int], dict]] = []
    positions: dict[tuple[str, int], tuple[int, int]] = {}  # current file: (inode, offset)
    seq = 0
    for key, paths_ in files.items():
        recs: list[dict] = []
        for p in paths_:
            got, end = _records(p)
            recs += got
            if p.endswith(".log"):
                try:
                    positions[key] = (os.stat(p).st_ino, end)
                except FileNotFoundError:
                    pass
        if since is not None:
            recs = [r for r in recs if r.get("t", 0) >= since]
        if tail is not None:
            recs = recs[-tail:] if tail > 0 else []
        for r in recs:
            merged.append((r.get("t", 0), seq, key, r))
            seq += 1
    merged.sort(key=lambda x: (x[0], x[1]))
    for _t, _s, key, rec in merged:
        show(key, rec)
    sys.stdout.flush()
    if not args.follow:
        return 0
    from .client import Client

    c = Client.for_project(project, timeout=2.0)
    last_check = 0.0
    ending = False
    while True:
        for key, found in log_files(log_dir, project).items():
            if not _selected(key, args.targets):
                continue
            current = next((p for p in found if p.endswith(".log")), None)
            if current is None:
                continue
            try:
                ino = os.stat(current).st_ino
            except FileNotFoundError:
                continue
            if len(f"{key[0]}-{key[1]}") > width:
                width = len(f"{key[0]}-{key[1]}")
            old_ino, pos = positions.get(key, (ino, 0))
            if old_ino != ino:  # rotated: the rest of the old file (now .1), then the new one
                rotated = next((p for p in found if p.endswith(".log.1")), None)
                if rotated:
                    for rec in _records(rotated, pos)[0]:
                        show(key, rec)
                pos = 0
            recs, pos = _records(current, pos)
            for rec in recs:
                if since is None or rec.get("t", 0) >= since:
                    show(key, rec)
            positions[key] = (ino, pos)
        sys.stdout.flush()
        if ending:
            return 0
        now = time.monotonic()
        if now - last_check > 0.5:
            last_check = now
            ending = not c.running()  # one more pass: what was written before it stopped
        if not ending:
            time.sleep(0.1)
