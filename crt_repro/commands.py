"""``crt-repro train`` and ``crt-repro evaluate``: the contract the workflow calls."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from crt_repro.config import (LM_DATASETS, PROFILES, VIDEO_DATASETS, Config, ConfigError, Device, RnnKind,
                              build_config, canonical_dataset, choices, parse_overrides)
from crt_repro.model_specs import is_known, names


def model_name(text: str) -> str:
    """``--model``: one of ours, ``package.module:Class`` or a ``crt_repro.models`` entry point."""
    if is_known(text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a model: one of {', '.join(names())}, "
                                     "a package.module:Class or a crt_repro.models entry point")


# The flags of `crt-repro train` that set a config key (--dataset is build_config's own argument).
FLAG_KEYS = {"model": ("model", "name"), "layers": ("model", "n_layer"), "rnn": ("model", "rnn"),
             "seg_len": ("data", "seg_len"), "data_dir": ("data", "data_dir"), "seed": ("run", "seed"),
             "device": ("run", "device")}


def train_config(profile: str, dataset: str, sets: Sequence[str] = (), **flags: Any) -> Config:
    """The Config `crt-repro train` runs: the profile, the dataset, the ``--set`` overrides and the
    flags of ``FLAG_KEYS`` (None: not given). The workflow plans its runs through this same
    function, so its run ids are the CLI's."""
    overrides = parse_overrides(list(sets))
    require_flags_agree_with_sets({**flags, "dataset": dataset}, overrides)
    for flag, (section, key) in FLAG_KEYS.items():
        if flags.get(flag) is not None:
            overrides.setdefault(section, {})[key] = flags[flag]
    return build_config(profile, dataset, overrides)


def require_flags_agree_with_sets(flags: dict[str, Any], overrides: dict) -> None:
    """A flag and a --set of its key (``--layers 2 --set model.n_layer=4``) must give one value:
    taking either would run something the other asked not to, without a word."""
    for flag, (section, key) in {**FLAG_KEYS, "dataset": ("data", "dataset")}.items():
        value, given = flags.get(flag), overrides.get(section, {})
        if value is None or key not in given:
            continue
        same = (canonical_dataset(value) == canonical_dataset(given[key]) if flag == "dataset"
                else value == given[key])
        if not same:
            raise ConfigError(f"--{flag.replace('_', '-')} {value} and --set {section}.{key}={given[key]} "
                              "disagree: give one of them")


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """``crt-repro train --nproc N ARGS`` as the torchrun command it stands for (one machine)."""
    rest, skip = [], False
    for a in argv:
        if skip or a == "--nproc" or a.startswith("--nproc="):
            skip = a == "--nproc"
            continue
        rest.append(a)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "crt_repro", *rest]


def cmd_train(args: argparse.Namespace) -> int:
    if args.nproc is not None and args.nproc < 1:
        raise ValueError(f"--nproc {args.nproc}: give at least 1 process")
    flags = {f: getattr(args, f) for f in FLAG_KEYS}
    cfg = train_config(args.profile, args.dataset, args.set or [], **flags)  # a bad config: one line, before torchrun
    from crt_repro import distributed
    from crt_repro.train import resolve_device, train

    distributed.refuse_multi_node(dict(os.environ))
    device = resolve_device(cfg.run.device, cfg.profile)  # no usable device: one line, before torchrun
    if (args.nproc or 1) > 1 and "WORLD_SIZE" not in os.environ:
        distributed.check_gpu_count(args.nproc, device)
        distributed.warn_cpu_oversubscribed(args.nproc, device)
        return subprocess.run(torchrun_command(args.nproc, args.argv)).returncode


    world = distributed.init_from_env()
    metrics = train(cfg, args.out)
    if not world.is_main:
        return 0
    print(json.dumps({k: metrics[k] for k in ("run_id", "valid_loss", "test_loss") if k in metrics} |
                     {k: v for k, v in metrics.items() if k.endswith(("_ppl", "_mca", "_top1"))}, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from crt_repro.train import evaluate_run

    print(json.dumps(evaluate_run(args.run), indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one model and evaluate it; rerun to resume")
    p.add_argument("--profile", choices=PROFILES, required=True, metavar="SCALE",
                   help="the scale, smoke | cpu | paper: its training preset crt_repro/profiles/SCALE.yaml")
    p.add_argument("--dataset", required=True, help=" | ".join(LM_DATASETS + VIDEO_DATASETS))
    p.add_argument("--model", type=model_name, required=True,
                   help=f"{' | '.join(names())} | package.module:Class (your own: docs/adding-a-model.md)")
    p.add_argument("--layers", type=int)
    p.add_argument("--seg-len", type=int)
    p.add_argument("--rnn", choices=choices(RnnKind))
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=choices(Device))
    p.add_argument("--data-dir", help="folder holding the corpus (default: $CRT_REPRO_DATA, else ./data; "
                   "fill it with `crt-repro download`)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override any config key, e.g. --set model.d_model=64 (repeatable)")
    p.add_argument("--out", required=True, help="run directory (created; resumed if it holds a checkpoint)")
    p.add_argument("--nproc", type=int, help="data-parallel processes on this machine, one per GPU (through "
                   "torchrun; the same as `torchrun --nproc_per_node N -m crt_repro train ...`)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="re-evaluate a run directory's last checkpoint")
    p.add_argument("--run", required=True, help="run directory written by `crt-repro train`")
    p.set_defaults(func=cmd_evaluate)
