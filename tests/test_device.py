"""The device a run trains on: the paper profile on CUDA or a one-line reason why not (CUDA mocked),
and what metrics.json records of it."""
from __future__ import annotations

import pytest
import torch

from crt_repro import cli
from crt_repro.config import ConfigError, build_config, parse_overrides
from crt_repro.train import resolve_device, train


def no_cuda(monkeypatch, build: str | None) -> None:
    """A machine where CUDA cannot be used, with a CPU-only torch (build None) or a CUDA build."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", build)
    monkeypatch.setattr(torch.version, "hip", None)


def paper_train(tmp_path, capsys) -> tuple[int, str]:
    code = cli.main(["train", "--profile", "paper", "--dataset", "synthetic", "--model", "transformer",
                     "--out", str(tmp_path / "run")])
    return code, capsys.readouterr().err.strip()


def test_paper_profile_on_a_cpu_only_torch_stops_saying_so(monkeypatch, tmp_path, capsys):
    no_cuda(monkeypatch, None)
    code, err = paper_train(tmp_path, capsys)
    assert code == 2 and "\n" not in err and not (tmp_path / "run").exists()
    assert err.startswith("crt-repro train: error: run.device=auto means CUDA under the paper profile, "
                          f"and this torch ({torch.__version__}) is a CPU-only build")


def test_paper_profile_with_a_cuda_build_that_sees_no_gpu_stops_saying_so(monkeypatch, tmp_path, capsys):
    no_cuda(monkeypatch, "12.6")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    code, err = paper_train(tmp_path, capsys)
    assert code == 2 and "\n" not in err
    assert "is built for CUDA 12.6 and cannot use a GPU here" in err and "CUDA_VISIBLE_DEVICES=)" in err
    with pytest.raises(ConfigError, match="^run.device=cuda: torch .* is built for CUDA 12.6"):
        resolve_device("cuda", "smoke")


def test_auto_is_the_cpu_without_cuda_under_the_smoke_and_cpu_profiles(monkeypatch):
    no_cuda(monkeypatch, None)
    assert resolve_device("auto", "smoke") == resolve_device("auto", "cpu") == torch.device("cpu")
    assert resolve_device("cpu", "paper") == torch.device("cpu")  # asked for explicitly
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", "paper") == torch.device("cuda")


def test_metrics_record_the_device_type_visible_gpus_and_processes(tmp_path):
    cfg = build_config("smoke", "synthetic", parse_overrides(["model.n_layer=1", "optim.max_steps=2", "optim.warmup_steps=0"]))
    metrics = train(cfg, tmp_path / "run", progress=False)
    assert metrics["device_type"] == "cpu" and metrics["device"].startswith("cpu (")
    assert metrics["visible_gpus"] == torch.cuda.device_count() and metrics["processes"] == 1
