"""The video task under the training engine: synthetic-video end to end, step-determined batches."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crt_repro.config import build_config
from crt_repro.tasks.video import VideoTask
from crt_repro.train import train


@pytest.fixture(autouse=True)
def setup(monkeypatch):
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


def test_synthetic_set_is_generated_once_into_the_cache(tmp_path, monkeypatch):
    import crt_repro.video.synthetic as synthetic

    monkeypatch.setenv("CRT_REPRO_CACHE", str(tmp_path / "cache"))
    writes = []
    real_write = synthetic.write_video
    monkeypatch.setattr(synthetic, "write_video",
                        lambda path, *a, **k: (writes.append(path), real_write(path, *a, **k)))
    first = VideoTask(config(), torch.device("cpu"))
    assert len(writes) == 100
    root = first.train_set.clips[0].path.parent
    assert root.parent == tmp_path / "cache" / "synthetic-video"
    assert [p.name for p in root.parent.iterdir()] == [root.name]   # no temporary folder left behind
    before = {p.name: p.stat().st_mtime_ns for p in root.iterdir()}
    second = VideoTask(config(), torch.device("cpu"))
    assert len(writes) == 100   # the second task wrote nothing ...
    assert second.train_set.clips[0].path.parent == root   # ... and reads the same folder, unchanged
    assert {p.name: p.stat().st_mtime_ns for p in root.iterdir()} == before
    # other generation parameters are another set
    other = synthetic.synthetic_video_dir(n_per_class=1, seed=3)
    assert other != root and len(writes) == 104


class Counter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(4))
        self.calls = 0

    def forward(self, x, y=None):
        self.calls += 1
        return self.w.expand(len(x), 4) + x.mean(dim=(1, 2, 3, 4)).unsqueeze(1) * torch.arange(4.0), None


def test_valid_and_test_are_one_evaluation_until_the_weights_change():
    task = VideoTask(config(), torch.device("cpu"))
    model = Counter().eval()
    valid = task.evaluate(model, "valid")
    passes = model.calls
    assert passes == 2   # 40 test clips, eval batches of 20 (smoke's synthetic-video section)
    test = task.evaluate(model, "test")
    assert test == valid and model.calls == passes
    with torch.no_grad():
        model.w.add_(torch.tensor([0.0, 0.0, 0.0, 10.0]))   # an optimiser-style in-place update
    changed = task.evaluate(model, "test")
    assert model.calls == 2 * passes and changed["loss"] != valid["loss"] and changed["top1"] == 0.25
    other = Counter().eval()   # another model with equal weights is evaluated anew
    assert task.evaluate(other, "valid") == valid and other.calls == passes
    model.train()
    task.evaluate(model, "valid")
    assert model.calls == 3 * passes
