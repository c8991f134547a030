"""The CUDA code paths against the CPU's (skipped without CUDA; scripts/gpu_check.sh runs them)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from crt_repro.config import build_config, parse_overrides
from crt_repro.run_directory import LOG
from crt_repro.train import train

from conftest import REPO_ROOT, Stop, stop_at

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def tiny(model: str, device: str, *sets: str):
    # XL's attention: the boolean-mask SDPA on CUDA, the float mask on the CPU (model.xl_attention auto).
    return build_config("smoke", "synthetic", parse_overrides([
        f"model.name={model}", "model.rnn=ncgru", "model.n_layer=2", "model.d_model=64", "model.d_inner=128",
        "data.seg_len=9", "optim.max_steps=20",
        "run.checkpoint_every=5", "run.log_every=1", "run.bf16=false", f"run.device={device}", *sets]))


def losses(run) -> list[float]:
    return [e["loss"] for e in map(json.loads, (run / LOG).read_text().splitlines()) if "split" not in e]


@needs_cuda
@pytest.mark.parametrize("model", ["transformer", "transformer_xl", "crt"])
def test_a_cuda_run_trains_as_the_cpu_run_and_resumes(tmp_path, model):
    cpu = train(tiny(model, "cpu"), tmp_path / "cpu", progress=False)
    gpu = train(tiny(model, "cuda"), tmp_path / "cuda", progress=False)
    assert gpu["device"] == torch.cuda.get_device_name()
    # fp32 on both (no TF32 for matmuls by default); only summation orders differ.
    assert losses(tmp_path / "cuda") == pytest.approx(losses(tmp_path / "cpu"), abs=2e-3, rel=0)
    assert gpu["valid_loss"] == pytest.approx(cpu["valid_loss"], abs=2e-3)
    # The carried state comes back from the checkpoint onto the GPU.
    with pytest.raises(Stop):
        train(tiny(model, "cuda"), tmp_path / "cut", on_step=stop_at(7), progress=False)
    resumed = train(tiny(model, "cuda"), tmp_path / "cut", progress=False)
    assert resumed["valid_loss"] == pytest.approx(gpu["valid_loss"], abs=1e-4)


@needs_cuda
@pytest.mark.parametrize("model", ["transformer_xl", "crt"])
def test_bf16_autocast_on_cuda_trains(tmp_path, model):
    cpu = train(tiny(model, "cpu"), tmp_path / "cpu", progress=False)
    bf16 = train(tiny(model, "cuda", "run.bf16=true"), tmp_path / "bf16", progress=False)
    assert bf16["precision"] == "bf16"
    assert bf16["valid_loss"] == pytest.approx(cpu["valid_loss"], abs=0.05)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_gpu_check_says_no_gpu_and_succeeds_without_one(tmp_path):
    done = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu_check.sh"), str(tmp_path / "out")],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "no GPU" in done.stdout and "no GPU" in (tmp_path / "out" / "summary.txt").read_text()


def test_gpu_check_parses_and_refuses_an_unknown_option_in_one_line(tmp_path):
    """The script's own syntax (its stages run on a CPU with --cpu, minutes here: see docs/performance.md)."""
    script = str(REPO_ROOT / "scripts" / "gpu_check.sh")
    assert subprocess.run(["bash", "-n", script]).returncode == 0
    done = subprocess.run(["bash", script, str(tmp_path / "out"), "--gpus"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip() == (
        "gpu_check: unknown option --gpus (usage: scripts/gpu_check.sh [OUT_DIR] [--cpu])")


@needs_cuda
@pytest.mark.parametrize("d_head, mlen", [(16, 0), (38, 7), (41, 7)])  # each width compiles FlexAttention anew
def test_xl_attention_kernels_on_cuda_equal_sdpa_in_value_and_gradient(d_head, mlen):
    """FlexAttention (compiled) and the boolean-mask SDPA against the float mask, at the paper's
    head sizes (38: PTB, 41: WikiText-103) and FlexAttention's least (16)."""
    from crt_repro.config import ModelConfig
    from crt_repro.models.layers import sinusoid_table
    from crt_repro.models.transformer_xl import RelativeAttention

    d = 4 * d_head
    outs = {}
    for kernel in ("sdpa", "sdpa_bool", "flex"):
        torch.manual_seed(0)
        att = RelativeAttention(ModelConfig(d_model=d, n_head=4, dropout=0.0, xl_attention=kernel)).cuda()
        g = torch.Generator(device="cuda").manual_seed(1)
        x = torch.randn(3, 20, d, device="cuda", generator=g, requires_grad=True)
        ctx = torch.randn(3, mlen, d, device="cuda", generator=g) if mlen else None
        r = sinusoid_table(torch.arange(mlen + 19, -1, -1, dtype=torch.float32, device="cuda"), d)
        y = att(x, ctx, r)
        y.square().sum().backward()
        outs[kernel] = (y.detach(), x.grad, att.u.grad, att.v.grad, att.r.weight.grad)
    for kernel in ("sdpa_bool", "flex"):
        for a, b in zip(outs["sdpa"], outs[kernel]):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


@needs_cuda
def test_a_compiled_run_trains_as_the_eager_one(tmp_path):
    eager = train(tiny("transformer_xl", "cuda"), tmp_path / "eager", progress=False)
    compiled = train(tiny("transformer_xl", "cuda", "run.compile=true"), tmp_path / "compiled", progress=False)
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "eager"), abs=2e-3, rel=0)
    assert compiled["valid_loss"] == pytest.approx(eager["valid_loss"], abs=2e-3)
