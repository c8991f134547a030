"""``crt-repro with-gpus N -- COMMAND ...``: run COMMAND on N GPUs of its own.

Snakemake counts a job's ``gpu`` resource but does not say which GPUs the job may use (it sets
no CUDA_VISIBLE_DEVICES), so jobs side by side would all train on GPU 0. Every workflow job that
declares GPUs therefore starts through this command: it takes N of the GPUs it sees by locking
one file per GPU (``flock``) in a lock folder, sets CUDA_VISIBLE_DEVICES to them and becomes
COMMAND (exec), which inherits the locks. The kernel releases them when COMMAND exits, however
it exits (a kill too), so no stale lock outlives a job. While fewer than N are free, it waits.

The lock folder is one per user and machine ($CRT_REPRO_GPU_LOCKS, default
``<tmp>/crt-repro-gpus-<uid>``), so the jobs of every workflow its user runs there share the
GPUs. Inside a Slurm job it is one per Slurm job: the GPUs Slurm gave the job are its own, and
another job on the node may number its own GPUs alike.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import re
import sys
import tempfile
import time
from pathlib import Path


def visible_gpus(env: dict[str, str]) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (indices or UUIDs)."""
    if "CUDA_VISIBLE_DEVICES" in env:
        return [g.strip() for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def lock_dir(env: dict[str, str]) -> Path:
    folder = Path(env.get("CRT_REPRO_GPU_LOCKS") or Path(tempfile.gettempdir()) / f"crt-repro-gpus-{os.getuid()}")
    return folder / f"slurm-{env['SLURM_JOB_ID']}" if env.get("SLURM_JOB_ID") else folder


def claim(n: int, gpus: list[str], folder: Path) -> tuple[list[str], list[int]] | None:
    """``n`` of ``gpus`` that no other job holds, and the descriptors of their locks (held until
    closed); None where fewer are free (then this holds none)."""
    folder.mkdir(parents=True, exist_ok=True)
    held: list[tuple[str, int]] = []
    for gpu in gpus:
        if len(held) == n:
            break
        fd = os.open(folder / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', gpu)}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        held.append((gpu, fd))
    if len(held) < n:
        for _, fd in held:
            os.close(fd)
        return None
    return [g for g, _ in held], [fd for _, fd in held]


def wait_for(n: int, gpus: list[str], folder: Path, poll_s: float) -> tuple[list[str], list[int]]:
    got = claim(n, gpus, folder)
    if got is None:
        print(f"crt-repro with-gpus: waiting for {n} of GPUs {','.join(gpus)} to be free (locks in {folder})",
              file=sys.stderr, flush=True)
    while got is None:
        time.sleep(poll_s)
        got = claim(n, gpus, folder)
    return got


def cmd_with_gpus(args: argparse.Namespace) -> int:
    command = args.job  # not args.command: the subcommand's name is there (cli.main reports with it)
    if not command:
        raise ValueError("no command given: crt-repro with-gpus N -- COMMAND ...")
    if args.n < 0:
        raise ValueError(f"{args.n} GPUs: give 0 or more")
    env = dict(os.environ)
    gpus = visible_gpus(env) if args.n else []
    if args.n > len(gpus):
        raise ValueError(f"the job asks for {args.n} GPUs and {len(gpus)} are visible "
                         f"(CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    ids, fds = wait_for(args.n, gpus, lock_dir(env), args.poll)
    for fd in fds:
        os.set_inheritable(fd, True)  # COMMAND holds the locks from here on
    env["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
    print(f"crt-repro with-gpus: CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}", file=sys.stderr, flush=True)
    os.execvpe(command[0], command, env)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("with-gpus", help="run a command on N GPUs no other job of this machine holds "
                       "(the workflow's GPU jobs start through it)")
    p.add_argument("n", type=int, metavar="N", help="GPUs the command gets (0: it sees none)")
    p.add_argument("--poll", type=float, default=10.0, metavar="S", help="seconds between tries while waiting")
    p.add_argument("job", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
    p.set_defaults(func=cmd_with_gpus)
