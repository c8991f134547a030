"""Loading a TimeSformer checkpoint in the official (facebookresearch/TimeSformer) format."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crt_repro.models.vit import ViTConfig, VideoViT
from crt_repro.video.checkpoint import CheckpointMismatch, load_timesformer_k400

DEPTH, D = 2, 32
_BLOCK = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
          "attn.proj.bias", "temporal_norm1.weight", "temporal_norm1.bias",
          "temporal_attn.qkv.weight", "temporal_attn.qkv.bias", "temporal_attn.proj.weight",
          "temporal_attn.proj.bias", "temporal_fc.weight", "temporal_fc.bias", "norm2.weight",
          "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]


def official_keys(depth: int) -> set[str]:
    """The state-dict keys of facebookresearch/TimeSformer's divided-space-time ViT."""
    top = ["cls_token", "pos_embed", "time_embed", "patch_embed.proj.weight",
           "patch_embed.proj.bias", "norm.weight", "norm.bias", "head.weight", "head.bias"]
    blocks = [f"blocks.{i}.{k}" for i in range(depth) for k in _BLOCK]
    return {"model." + k for k in top + blocks}


def model(**kw) -> VideoViT:
    cfg = dict(image_size=16, patch_size=8, n_frames=8, n_classes=400, d_model=D,
               n_layer=DEPTH, n_head=4)
    cfg.update(kw)
    return VideoViT(ViTConfig(**cfg)).eval()


def save_official(tmp_path: Path, state: dict) -> Path:
    path = tmp_path / "TimeSformer_divST_8x32_224_K400.pyth"
    torch.save({"epoch": 15, "model_state": state, "cfg": "TRAIN:\n  ENABLE: true\n"}, path)
    return path


@pytest.fixture
def k400(tmp_path: Path) -> tuple[VideoViT, dict]:
    torch.manual_seed(0)
    src = model()
    for p in src.parameters():              # no zero-initialised tensor, so a copy is visible
        torch.nn.init.normal_(p, std=0.1)
    state = {"model." + k: v for k, v in src.state_dict().items()}
    assert set(state) == official_keys(DEPTH)
    return src, state


def test_official_checkpoint_into_crvit(tmp_path: Path, k400):
    src, state = k400
    dst = model(n_classes=31, recurrent=True)
    report = load_timesformer_k400(dst, save_official(tmp_path, state))
    src_sd, dst_sd = src.state_dict(), dst.state_dict()
    for k in src_sd:
        if not k.startswith("head."):
            assert torch.equal(src_sd[k], dst_sd[k]), k
    assert report.dropped == ["head.bias", "head.weight"] and report.resized == []
    assert set(report.fresh) == {k for k in dst_sd if k.startswith(("head.", "memory_rnn."))}
    x = torch.randn(1, 8, 3, 16, 16)
    with torch.no_grad():   # same backbone: without a memory token, the same class token
        torch.testing.assert_close(src.step(src.embed(x))[1], dst.step(dst.embed(x))[1])


def test_embeddings_are_resized(tmp_path: Path, k400):
    _, state = k400
    state["model.time_embed"] = torch.full((1, 8, D), 0.5)        # constant over time
    dst = model(n_classes=31, n_frames=4, image_size=24)          # 3x3 grid instead of 2x2
    report = load_timesformer_k400(dst, save_official(tmp_path, state))
    assert report.resized == ["pos_embed", "time_embed"]
    assert dst.time_embed.shape == (1, 4, D) and dst.pos_embed.shape == (1, 10, D)
    torch.testing.assert_close(dst.time_embed.detach(), torch.full((1, 4, D), 0.5))
    torch.testing.assert_close(dst.pos_embed[:, 0].detach(), state["model.pos_embed"][:, 0])


def test_mismatch_lists_the_keys(tmp_path: Path, k400):
    _, state = k400
    state["model.blocks.1.temporal_fcX.weight"] = state.pop("model.blocks.1.temporal_fc.weight")
    state["model.norm.weight"] = torch.ones(D + 1)
    with pytest.raises(CheckpointMismatch) as err:
        load_timesformer_k400(model(n_classes=31), save_official(tmp_path, state))
    msg = str(err.value)
    assert "missing (1): blocks.1.temporal_fc.weight" in msg
    assert "unexpected (1): blocks.1.temporal_fcX.weight" in msg
    assert "norm.weight: checkpoint (33,), model (32,)" in msg


def test_a_timesformer_runs_checkpoint_starts_crvit(tmp_path: Path):
    """The paper's second stage: model.init_from = the TimeSformer run's checkpoint.pt."""
    from crt_repro.config import build_config
    from crt_repro.models import build_model
    from crt_repro.train import train

    fast = {"optim": {"max_steps": 2, "warmup_steps": 1}, "run": {"device": "cpu"}}
    train(build_config("smoke", "synthetic-video", {"model": {"name": "timesformer"}, **fast}), tmp_path / "ts",
          progress=False)
    stage1 = torch.load(tmp_path / "ts" / "checkpoint.pt", weights_only=True)["model"]
    cfg = build_config("smoke", "synthetic-video", {"model": {"name": "crvit", "rnn": "gru",
                                                              "init_from": str(tmp_path / "ts" / "checkpoint.pt")}})
    crvit = build_model(cfg, 4)
    state = crvit.state_dict()
    backbone = [k for k in stage1 if not k.startswith("head.")]
    assert backbone and all(torch.equal(state[k], stage1[k]) for k in backbone)
    assert state["head.weight"].shape == (4, 2 * cfg.model.d_model)   # CR-ViT's own head, fresh
    assert any(k.startswith("memory_rnn.") for k in state)
    with pytest.raises(FileNotFoundError, match="model.init_from"):
        build_model(build_config("smoke", "synthetic-video", {"model": {"name": "crvit",
                                                                        "init_from": str(tmp_path / "none.pt")}}), 4)
