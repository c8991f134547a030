"""GPUs counted and pinned: the lock-file allocator behind `crt-repro with-gpus` (one GPU and eight,
simulated through CUDA_VISIBLE_DEVICES or a mocked device count) and `train --nproc` on too few GPUs."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from crt_repro import cli
from crt_repro.gpus import claim, lock_dir, visible_gpus

CLI = [sys.executable, "-m", "crt_repro"]


def test_eight_jobs_get_eight_different_gpus_and_a_ninth_waits(tmp_path):
    gpus = [str(i) for i in range(8)]
    held = [claim(1, gpus, tmp_path) for _ in range(8)]
    assert sorted(ids[0] for ids, _ in held) == gpus
    assert claim(1, gpus, tmp_path) is None
    os.close(held[5][1][0])  # that job ended: its GPU is free again
    assert claim(1, gpus, tmp_path)[0] == [held[5][0][0]]


def test_a_two_gpu_claim_takes_both_or_none(tmp_path):
    gpus = ["0", "1", "2"]
    first = claim(2, gpus, tmp_path)
    assert first[0] == ["0", "1"]
    assert claim(2, gpus, tmp_path) is None
    assert claim(1, gpus, tmp_path)[0] == ["2"]  # the failed claim of two released the one it had


def test_one_gpu_counted_by_torch_when_cuda_visible_devices_is_unset(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert visible_gpus({}) == ["0"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "3,GPU-ab12"}) == ["3", "GPU-ab12"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert claim(1, ["0"], tmp_path) is not None and claim(1, ["0"], tmp_path) is None


def test_a_slurm_job_has_a_lock_folder_of_its_own(tmp_path):
    base = {"CRT_REPRO_GPU_LOCKS": str(tmp_path)}
    assert lock_dir(base) == tmp_path
    assert lock_dir({**base, "SLURM_JOB_ID": "77"}) == tmp_path / "slurm-77"


def with_gpus(n: int, visible: str, locks, seconds: float) -> subprocess.Popen:
    """A job that prints the GPUs it got, when it started and when it ended."""
    script = f'echo "$CUDA_VISIBLE_DEVICES $(date +%s.%N)"; sleep {seconds}; date +%s.%N'
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible, "CRT_REPRO_GPU_LOCKS": str(locks), "OMP_NUM_THREADS": "1"}
    env.pop("SLURM_JOB_ID", None)
    return subprocess.Popen(CLI + ["with-gpus", "--poll", "0.05", str(n), "--", "sh", "-c", script], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(jobs) -> list[tuple[str, float, float]]:
    out = []
    for p in jobs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        first, end = stdout.split("\n")[:2]
        gpu, start = first.rsplit(" ", 1)
        out.append((gpu, float(start), float(end)))
    return out


def test_on_one_gpu_two_jobs_run_in_turn(tmp_path):
    a = with_gpus(1, "0", tmp_path, 3)
    time.sleep(0.5)
    b = with_gpus(1, "0", tmp_path, 0)
    (gpu_a, start_a, end_a), (gpu_b, start_b, _) = finished([a, b])
    assert gpu_a == gpu_b == "0"
    assert start_b >= end_a, "the second job started while the first held the GPU"


def test_on_eight_gpus_two_jobs_run_side_by_side_on_different_gpus(tmp_path):
    jobs = [with_gpus(1, ",".join(map(str, range(8))), tmp_path, 3) for _ in range(2)]
    (gpu_a, start_a, end_a), (gpu_b, start_b, end_b) = finished(jobs)
    assert {gpu_a, gpu_b} <= {str(i) for i in range(8)} and gpu_a != gpu_b
    assert start_b < end_a and start_a < end_b, "the jobs did not overlap"


def test_more_gpus_than_visible_is_one_line(tmp_path):
    done = subprocess.run(CLI + ["with-gpus", "2", "--", "true"], capture_output=True, text=True,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "0", "CRT_REPRO_GPU_LOCKS": str(tmp_path)})
    assert done.returncode == 2
    assert done.stderr.strip() == ("crt-repro with-gpus: error: the job asks for 2 GPUs and 1 are visible "
                                   "(CUDA_VISIBLE_DEVICES=0)")


def test_train_nproc_on_cuda_with_fewer_gpus_stops_in_one_line_before_torchrun(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("torchrun was started"))
    code = cli.main(["train", "--nproc", "4", "--device", "cuda", "--profile", "smoke", "--dataset", "synthetic",
                     "--model", "transformer", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith("crt-repro train: error: --nproc 4: 4 processes need 4 GPUs and 2 are visible")
