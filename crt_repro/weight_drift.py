"""``crt-repro drift``: how far a run's weights moved from their initialisation, per module.

A part of a model that no gradient reaches keeps its initial weights: CRT's memory RNN writes the
memory only for the next segment, so with ``optim.bptt_segments: 1`` (the state detached at every
segment) it never learns, and whatever the memory carries is what a random recurrent network
keeps of its inputs. The initial weights are rebuilt from the run's config and seed, as
``crt-repro train`` built them, and compared with the run's checkpoint (its last step).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

def weight_drift(run_dir: str | Path) -> list[dict]:
    """One row per top-level module of the model: ``relative_drift`` = ||W - W0|| / ||W0|| over
    its floating-point parameters and buffers (0.0 exactly when nothing changed them)."""
    from crt_repro import distributed
    from crt_repro.checkpoint import read_checkpoint
    from crt_repro.config import load_config_file
    from crt_repro.models import build_model
    from crt_repro.run_directory import CHECKPOINT, CONFIG, require_checkpointed_run
    from crt_repro.tasks import make_task
    from crt_repro.train import seed_everything

    run_dir = Path(run_dir)
    require_checkpointed_run(run_dir)
    cfg = load_config_file(run_dir / CONFIG)
    device = torch.device("cpu")
    # The same calls in the same order as train(): the task may draw from the seeded generator.
    seed_everything(cfg.run.seed)
    task = make_task(cfg, device, distributed.shard(cfg, distributed.World()))
    initial = build_model(cfg, task.n_out).state_dict()
    ck = read_checkpoint(run_dir / CHECKPOINT, device)
    final = ck["model"]
    if final.keys() != initial.keys():
        raise ValueError(f"{run_dir / CHECKPOINT} holds other weights than {run_dir / CONFIG} builds")
    sums: dict[str, list[float]] = {}
    for key, w0 in initial.items():
        if not w0.is_floating_point():
            continue
        acc = sums.setdefault(key.split(".")[0], [0.0, 0.0, 0])
        acc[0] += (final[key].double() - w0.double()).square().sum().item()
        acc[1] += w0.double().square().sum().item()
        acc[2] += w0.numel()
    return [{"run_id": cfg.run_id(), "step": ck["step"], "module": module, "params": int(n),
             "relative_drift": math.sqrt(d / w) if w > 0 else math.sqrt(d)}
            for module, (d, w, n) in sums.items()]


def cmd_drift(args: argparse.Namespace) -> int:
    rows = [row for run in args.runs for row in weight_drift(run)]
    width = max(len(r["run_id"]) for r in rows)
    print(f"{'run':<{width}}  {'step':>6}  {'module':<10} {'params':>9}  relative drift")
    for r in rows:
        print(f"{r['run_id']:<{width}}  {r['step']:>6}  {r['module']:<10} {r['params']:>9}  {r['relative_drift']:.4f}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("drift", help="how far each module's weights moved from their initialisation in a run "
                                     "(0 for a part no gradient reached)")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directory of `crt-repro train` (with checkpoint.pt)")
    p.set_defaults(func=cmd_drift)
