"""The ``crt-repro`` command line. Each subcommand lives in the module that does the work and
adds itself through a ``register(subparsers)`` function; this file only assembles them."""
from __future__ import annotations

import argparse
import sys
from importlib import import_module

# Modules that contribute subcommands, in the order ``--help`` lists them.
COMMAND_MODULES = [
    "crt_repro.commands",
    "crt_repro.data.download",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crt-repro", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        # Errors of input (config, data, run dirs) are reported in one line, not a traceback.
        print(f"crt-repro {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
