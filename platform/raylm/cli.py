"""The ``raylm`` command.

Each subcommand lives in its own module under :mod:`raylm.commands` and
exposes ``register(subparsers)``; modules are found automatically, so adding a
command never touches this file. Heavy imports (torch, ray) stay inside the
command functions so that ``raylm --help`` is instant.

A :class:`~raylm.errors.UserError` exits with status 2 and a message, with no
traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from raylm import __version__, commands
from raylm.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raylm",
        description="Train transformer language models on Ray and run compute-optimal scaling studies.",
    )
    parser.add_argument("--version", action="version", version=f"raylm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``--section.key VALUE`` / ``--section.key=VALUE`` overrides (and the top-level
    ``--name`` / ``--output_dir``) from the other arguments.

    No option of any command has a dot in its name or a top-level config key's name, so such an
    option is always an override (and its value is never mistaken for a positional argument).
    """
    from raylm.config_load import TOP_LEVEL_KEYS

    rest, overrides = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0][2:] if arg.startswith("--") else ""
        if "." in name or name in TOP_LEVEL_KEYS:
            overrides.append(arg)
            if "=" not in arg and i + 1 < len(argv):
                overrides.append(argv[i + 1])
                i += 1
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    rest, overrides = split_overrides(list(sys.argv[1:] if argv is None else argv))
    args, extra = parser.parse_known_args(rest)
    extra += overrides
    if args.command is None:
        parser.print_help()
        return 2
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        if args.debug:
            raise
        print(f"raylm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped (| head): not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps Python's exit-time flush quiet
        return 0


if __name__ == "__main__":
    sys.exit(main())
