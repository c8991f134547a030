"""One run = one config -> checkpoints, a metrics log and ``metrics.json`` in a run directory.

The run directory holds ``config.yaml`` (resolved), ``log.jsonl`` (one line per logged step and
evaluation), ``checkpoint.pt`` (model, optimiser, scheduler, RNG states, carried state, step) and,
only after a run finished cleanly, ``metrics.json``. Rerunning the same command resumes from the
checkpoint and, on CPU, reaches bitwise the same final metrics as an uninterrupted run.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import random
import resource
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
import yaml
from torch import nn
from tqdm import tqdm

from crt_repro import atomic
from crt_repro.config import Config, ConfigError, config_from_dict, dump_yaml, uses_rnn
from crt_repro.models import build_model
from crt_repro.tasks import make_task

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
LOG = "log.jsonl"
CONFIG = "config.yaml"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stops and writes no metrics."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device='cuda': no CUDA device is available")
    return torch.device(name)


def autocast(cfg: Config, device: torch.device):
    if not cfg.run.bf16:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW; weight decay on Linear weights only (not on norms, biases, embeddings or RNN
    parametrisations such as NCGRU's skew-symmetric A, which decay would bend towards identity)."""
    decay = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if id(p) in decay], "weight_decay": cfg.optim.weight_decay},
        {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0},
    ]
    o = cfg.optim
    return torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)


def lr_factor(step: int, cfg: Config) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` at ``max_steps``."""
    o = cfg.optim
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    progress = (step - o.warmup_steps) / max(1, o.max_steps - o.warmup_steps)
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def post_step(model: nn.Module, step: int) -> None:
    """Let modules keep their own invariants after each update (NCGRU refreshes its inverse)."""
    for m in model.modules():
        if m is not model and hasattr(m, "post_step"):
            m.post_step(step)


# ---------------------------------------------------------------------------------------------
# Run directory


def prepare_run_dir(cfg: Config, out: Path) -> None:
    """Write config.yaml, or check that the directory already holds this very run."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / CONFIG
    if path.exists():
        old = config_from_dict(yaml.safe_load(path.read_text()))
        if old.relevant_dict() != cfg.relevant_dict():
            raise ConfigError(
                f"{out} holds a different run (run id {old.run_id()}, this config is {cfg.run_id()}); "
                "choose another --out or delete that directory")
    atomic.write_text(path, dump_yaml(cfg))


def read_log(out: Path, up_to_step: int) -> list[dict]:
    path = out / LOG
    if not path.exists():
        return []
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["step"] <= up_to_step]


class Logger:
    """Appends to log.jsonl; on resume, entries past the checkpoint are dropped first."""

    def __init__(self, out: Path, resume_step: int):
        self.path = out / LOG
        atomic.write_text(self.path, "".join(json.dumps(e) + "\n" for e in read_log(out, resume_step)))

    def write(self, **entry) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")


# ---------------------------------------------------------------------------------------------
# Training


def save_checkpoint(out: Path, step: int, model, opt, sched, task, clock: dict) -> None:
    atomic.torch_save(out / CHECKPOINT, {
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "task": task.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        "clock": clock,
    })


def load_checkpoint(out: Path, model, opt, sched, task) -> tuple[int, dict]:
    ck = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    task.load_state_dict(ck["task"])
    torch.set_rng_state(ck["rng"]["torch"])
    random.setstate(ck["rng"]["python"])
    if ck["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
    return ck["step"], ck["clock"]


def train(cfg: Config, out: str | Path, on_step: Callable[[int], None] | None = None,
          progress: bool | None = None) -> dict:
    """Train ``cfg`` into run directory ``out`` (resuming if it holds a checkpoint) and evaluate.

    ``on_step(step)`` is called after every completed step (after its checkpoint, if any); tests
    use it to interrupt a run. ``progress=None`` shows a bar only on a terminal.
    Returns the metrics that were written to metrics.json.
    """
    out = Path(out)
    prepare_run_dir(cfg, out)
    if (out / METRICS).exists():
        return json.loads((out / METRICS).read_text())
    device = resolve_device(cfg.run.device)
    seed_everything(cfg.run.seed)
    task = make_task(cfg, device)
    model = build_model(cfg, task.n_out).to(device)
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    step, clock = 0, {"train_s": 0.0, "wall_s": 0.0, "items": 0}
    if (out / CHECKPOINT).exists():
        step, clock = load_checkpoint(out, model, opt, sched, task)
    log = Logger(out, step)
    started = time.perf_counter()
    wall_at_start = clock["wall_s"]

    bar = tqdm(total=cfg.optim.max_steps, initial=step, desc=cfg.run_id(), unit="step", dynamic_ncols=True,
               disable=(not sys.stderr.isatty()) if progress is None else not progress)
    model.train()
    while step < cfg.optim.max_steps:
        t0 = time.perf_counter()
        with autocast(cfg, device):
            loss, items = task.train_loss(model, step)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss is {loss.item()} at step {step + 1} of run {out}; no metrics written "
                                   "(lower optim.lr or raise optim.warmup_steps)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip)
        opt.step()
        sched.step()
        post_step(model, step)
        step += 1
        dt = time.perf_counter() - t0
        clock["train_s"] += dt
        clock["items"] += items
        bar.update(1)
        if step % cfg.run.log_every == 0 or step == cfg.optim.max_steps:
            rate = clock["items"] / max(clock["train_s"], 1e-9)
            bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{rate:.0f}")
            log.write(step=step, loss=loss.item(), lr=sched.get_last_lr()[0], items_per_s=rate)
        if cfg.run.eval_every and step % cfg.run.eval_every == 0 and step < cfg.optim.max_steps:
            log.write(step=step, split="valid", **evaluate_model(task, model, cfg, device, "valid"))
        if step % cfg.run.checkpoint_every == 0 or step == cfg.optim.max_steps:
            clock["wall_s"] = wall_at_start + time.perf_counter() - started
            save_checkpoint(out, step, model, opt, sched, task, clock)
        if on_step is not None:
            on_step(step)
    bar.close()

    results = {split: evaluate_model(task, model, cfg, device, split) for split in ("valid", "test")}
    for split, r in results.items():
        log.write(step=step, split=split, **r)
    metrics = run_metrics(cfg, model, results, clock, wall_at_start + time.perf_counter() - started, device)
    atomic.write_json(out / METRICS, metrics)
    return metrics


def evaluate_model(task, model: nn.Module, cfg: Config, device: torch.device, split: str) -> dict:
    was_training = model.training
    model.eval()
    with autocast(cfg, device):
        r = task.evaluate(model, split)
    model.train(was_training)
    return r


def run_metrics(cfg: Config, model: nn.Module, results: dict, clock: dict, wall_s: float,
                device: torch.device) -> dict:
    m = cfg.model
    metrics = {
        "run_id": cfg.run_id(),
        "profile": cfg.profile,
        "dataset": cfg.data.dataset,
        "model": m.name,
        "rnn": m.rnn if uses_rnn(m) else "",
        "layers": m.n_layer,
        "d_model": m.d_model,
        "seg_len": cfg.seg_len,
        "mem_len": cfg.mem_len,
        "seed": cfg.run.seed,
        "steps": cfg.optim.max_steps,
        "params": count_params(model),
        "train_items": clock["items"],
        "train_tokens_per_s": clock["items"] / max(clock["train_s"], 1e-9),
        "wall_s": wall_s,
        "peak_mem_mb": peak_mem_mb(device),
        "git_sha": git_sha(),
        "torch_version": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for split, r in results.items():
        for k, v in r.items():
            metrics[f"{split}_{k}"] = v
    return metrics


def evaluate_run(run_dir: str | Path) -> dict:
    """Re-evaluate the last checkpoint of a run directory on valid and test."""
    run_dir = Path(run_dir)
    for name in (CONFIG, CHECKPOINT):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir / name} does not exist: is {run_dir} a run directory of `crt-repro train`?")
    cfg = config_from_dict(yaml.safe_load((run_dir / CONFIG).read_text()))
    device = resolve_device(cfg.run.device)
    task = make_task(cfg, device)
    model = build_model(cfg, task.n_out).to(device)
    ck = torch.load(run_dir / CHECKPOINT, map_location=device, weights_only=False)
    model.load_state_dict(ck["model"])
    out = {"run_id": cfg.run_id(), "step": ck["step"]}
    for split in ("valid", "test"):
        for k, v in evaluate_model(task, model, cfg, device, split).items():
            out[f"{split}_{k}"] = v
    return out

