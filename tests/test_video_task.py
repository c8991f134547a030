"""The video task under the training engine: synthetic-video end to end, step-determined batches."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crt_repro import models
from crt_repro.config import build_config
from crt_repro.tasks.video import VideoTask
from crt_repro.train import train


@pytest.fixture(autouse=True)
def setup(monkeypatch):
    monkeypatch.setitem(models.REGISTRY, "timesformer", "crt_repro.models.vit:build_timesformer")
    monkeypatch.setitem(models.REGISTRY, "crvit", "crt_repro.models.vit:build_crvit")
    n = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny matrices: a second thread on a shared machine is far slower
    yield
    torch.set_num_threads(n)


def config(model: str = "crvit", **optim):
    return build_config("smoke", "synthetic-video", {
        "model": {"name": model, "rnn": "gru"}, "run": {"device": "cpu", "checkpoint_every": 2},
        "optim": {"max_steps": 4, "warmup_steps": 1, **optim}})


class Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, x, y):
        self.seen.append(x)
        return None, self.w * x.mean()


def test_batches_are_a_function_of_step():
    cfg = config()
    task = VideoTask(cfg, torch.device("cpu"))
    first = Recorder()
    for step in range(3):
        task.train_loss(first, step)
    resumed = Recorder()
    other = VideoTask(cfg, torch.device("cpu"))
    other.train_loss(resumed, 1)
    assert torch.equal(first.seen[1], resumed.seen[0])
    assert not torch.equal(first.seen[0], first.seen[1])
    assert first.seen[0].shape == (cfg.data.batch_size, cfg.data.frames, 3, cfg.data.crop, cfg.data.crop)


@pytest.mark.parametrize("model", ["crvit", "timesformer"])
def test_train_resume_and_metrics(tmp_path: Path, model: str):
    whole = train(config(model), tmp_path / "whole", progress=False)

    class Stop(Exception):
        pass

    def stop_at_2(step: int) -> None:
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        train(config(model), tmp_path / "cut", on_step=stop_at_2, progress=False)
    resumed = train(config(model), tmp_path / "cut", progress=False)
    for split in ("valid", "test"):
        assert 0.0 <= whole[f"{split}_mca"] <= 1.0 and whole[f"{split}_clips"] == 40
        assert resumed[f"{split}_loss"] == whole[f"{split}_loss"]
