"""The ``crt-repro`` command line. Each subcommand lives in the module that does the work and
adds itself through a ``register(subparsers)`` function; this file only assembles them."""
from __future__ import annotations

import argparse
import ctypes
import sys
import warnings
from importlib import import_module
from pathlib import Path

# What ``--help`` says of the tool (the docstring above is for who reads this file).
DESCRIPTION = ("Reproduce \"Compact Recurrent Transformer with Persistent Memory\" (arXiv 2505.00929): train and "
               "evaluate its models and baselines, measure their cost, and build the paper's tables, figures and "
               "claims from the runs, with the paper's numbers beside ours.")
# Modules that contribute subcommands, in the order ``--help`` lists them.
COMMAND_MODULES = [
    "crt_repro.commands",
    "crt_repro.gpus",
    "crt_repro.resume",
    "crt_repro.outputs",
    "crt_repro.progress",
    "crt_repro.data.download",
    "crt_repro.cost",
    "crt_repro.bench",
    "crt_repro.gradient_reach",
    "crt_repro.weight_drift",
    "crt_repro.report.cli",
    "crt_repro.report.reach",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crt-repro", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        import_module(name).register(sub)
    return parser


def keep_freed_memory() -> None:
    """Stop glibc from returning large freed blocks to the kernel after every step.

    A training step allocates and frees the same large temporaries each time; by default glibc
    unmaps them and the kernel must fault fresh pages in on the next step, which costs ~10 ms per
    CRT step at d_model 256 on the 2-core reference machine. No effect where glibc is absent.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 1 << 30)


def one_line_warnings(command: str, default):
    """Warnings of this package as one line, like its errors: each says what it is about (the file
    or the option), so the source line Python prints beneath it is noise; other libraries' warnings
    keep ``default``, Python's format."""
    package = str(Path(__file__).resolve().parent)

    def format_warning(message, category, filename, lineno, line=None):
        if str(Path(filename).resolve()).startswith(package):
            return f"crt-repro {command}: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    return format_warning


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # `train --nproc N` hands them on to torchrun
    default_format, warnings.formatwarning = warnings.formatwarning, one_line_warnings(args.command, warnings.formatwarning)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as e:
        # Errors of input (config, data, run dirs) and of the file system (permissions, a full
        # disk: OSError names the file) are reported in one line, not a traceback.
        print(f"crt-repro {args.command}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)  # crt_repro.train.Stopped: 128 + the signal's number
    finally:
        warnings.formatwarning = default_format


if __name__ == "__main__":
    sys.exit(main())
