"""A task turns a config into data, a training loss per step and evaluation metrics.

The engine (``crt_repro.train``) is the same for language models and video classifiers; it
talks to the data only through this interface:

    task.n_out                          vocabulary size or class count (sizes the model's output)
    task.total_steps(optim)             the run's steps, from its budget (optim.max_steps | max_tokens | max_epochs)
    task.epoch_items                    items (tokens, clips) one epoch trains on
    task.budget_text(optim)             the budget in words, for the log
    task.train_loss(model, step)        -> (mean loss of optimiser step ``step``, items it covered)
    task.evaluate(model, split)         -> {"loss": ..., "ppl" | "mca" | "top1": ...}
    task.state_dict() / load_state_dict(d)   what must survive a restart besides model/optimiser
                                             (e.g. the memory carried between segments)

The data order is a pure function of ``step`` so that a resumed run sees the same batches.
"""
from __future__ import annotations

import torch

from crt_repro.config import Config


def make_task(cfg: Config, device: torch.device, streams: slice | None = None):
    """``streams``: the training streams of this rank in data-parallel training (language models only)."""
    if cfg.is_video:
        from crt_repro.tasks.video import VideoTask

        return VideoTask(cfg, device)
    from crt_repro.tasks.lm import LMTask

    return LMTask(cfg, device, streams)


def data_fingerprint(cfg: Config) -> dict:
    """file -> {"bytes", "sha256"} of a run's data: runs record it and check it on resume."""
    if cfg.is_video:
        from crt_repro.tasks.video import video_fingerprint

        return video_fingerprint(cfg)
    if cfg.data.dataset == "memory-reach":
        from crt_repro.data.memory_reach import fingerprint as generated

        return generated()
    from crt_repro.data import fingerprint

    return fingerprint(cfg.data.dataset, cfg.data.data_dir)
