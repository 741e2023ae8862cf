"""The `pysup` command line: argument parsing and error reporting, no logic.

A `PysupError` becomes its message on stderr and exit status 1; only a bug shows a traceback.
Subcommands import what they need when they run, so a short command stays fast to start.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .errors import PysupError, SpecError


def _project_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Compose accepts these before the subcommand (`pysup -f a.yaml config`) and after it; the
    # copies on subcommands must not reset what was given before it, hence SUPPRESS there.
    kw = {} if top else {"default": argparse.SUPPRESS}
    g = parser.add_argument_group("project options")
    g.add_argument("-f", "--file", dest="files", action="append", metavar="FILE",
                   help="compose file (repeat to merge several; '-' reads stdin)", **({"default": []} if top else kw))
    g.add_argument("-p", "--project-name", metavar="NAME", help="project name (default: from the file)", **kw)
    g.add_argument("--project-directory", metavar="DIR", help="base for relative paths (default: the first file's)", **kw)
    g.add_argument("--env-file", dest="env_files", action="append", metavar="FILE",
                   help="interpolation variables (default: .env in the project directory)", **kw)
    g.add_argument("--profile", dest="profiles", action="append", metavar="NAME",
                   help="enable services of this profile ('*' for all)", **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pysup", description="A daemonless container supervisor for compose files.")
    parser.add_argument("--version", action="version", version=f"pysup {__version__}")
    parser.add_argument("--log-format", choices=("console", "json"), default=None,
                        help="how log lines are written to stderr (default: x-pysup.log_format, else console)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    _project_options(parser, top=True)
    parser.set_defaults(project_name=None, project_directory=None, env_files=None, profiles=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    config = sub.add_parser("config", help="validate the stack and print it resolved and normalised",
                            description="Print the fully resolved stack (like `docker compose config`), or its errors.")
    _project_options(config, top=False)
    config.add_argument("--format", choices=("yaml", "json"), default="yaml")
    out = config.add_mutually_exclusive_group()
    out.add_argument("--services", action="store_true", help="print the service names, one per line")
    out.add_argument("-q", "--quiet", action="store_true", help="only validate; print nothing but errors")
    config.set_defaults(handler=cmd_config)
    return parser


_log_settings: dict[str, str] = {}


def _warn(problems) -> None:
    """Log spec warnings. structlog is imported (and configured) only when there is something to
    say: it costs ~60 ms, a third of a short command's run."""
    if not problems:
        return
    import structlog

    from . import log

    log.configure(_log_settings.get("format") or "console", _log_settings.get("level", "info"))
    for problem in problems:
        structlog.get_logger().warning(str(problem))


def _load(args: argparse.Namespace):
    from .config.load import load

    loaded = load(args.files or None, project_name=args.project_name, project_dir=args.project_directory,
                  env_files=args.env_files, profiles=args.profiles)
    _warn(loaded.warnings)
    return loaded.stack


def cmd_config(args: argparse.Namespace) -> int:
    stack = _load(args)
    if args.quiet:
        return 0
    if args.services:
        sys.stdout.write("".join(f"{name}\n" for name in stack.services))
        return 0
    from .config import render

    # Like `docker compose config`: `$` doubled, so the output loads again to the same stack.
    if args.format == "json":
        sys.stdout.write(render.to_json(stack, escape_interpolation=True) + "\n")
    else:
        sys.stdout.write(render.to_yaml(stack, escape_interpolation=True))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _log_settings.update(format=args.log_format, level=args.log_level)
    try:
        return args.handler(args)
    except SpecError as exc:
        _warn(exc.warnings)
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return exc.exit_code
    except PysupError as exc:
        print(f"pysup: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `pysup config | head`: stdout closed early is not an error worth a traceback.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
