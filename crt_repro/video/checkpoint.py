"""Loading TimeSformer weights (the official Kinetics-400 checkpoint, or our own) into VideoViT.

The paper initialises TimeSformer from "the Kinetics 400 pretrained weights from TimeSformer",
trains it on Smarthome for 15 epochs, then adds the CR-ViT changes and trains 40 more (section
5.3). Both hand-overs go through `load_backbone` (`model.init_from`: the official file, or the
TimeSformer run's `checkpoint.pt`; the workflow's two-stage runs use the latter).

Official format (facebookresearch/TimeSformer, e.g. `TimeSformer_divST_8x32_224_K400.pyth`, a
SlowFast checkpoint): a dict whose 'model_state' is the state dict of the `TimeSformer` wrapper,
so every key starts with 'model.' (model.cls_token, model.pos_embed, model.time_embed,
model.patch_embed.proj.*, model.blocks.N.{norm1, attn.qkv, attn.proj, temporal_norm1,
temporal_attn.qkv, temporal_attn.proj, temporal_fc, norm2, mlp.fc1, mlp.fc2}.*, model.norm.*,
model.head.*). `VideoViT` uses the same names and the same qkv layout, so the key mapping is the
removal of that prefix.

Rules of `load_backbone`:
  - the source head is dropped (400 Kinetics classes; and CR-ViT's head reads 2 d inputs);
  - keys the target has and a TimeSformer cannot have (head, CR-ViT's memory RNN) keep their
    fresh initialisation;
  - pos_embed is resized to the target patch grid (bicubic on the grid, class position kept)
    and time_embed to the target frame count (linear); TimeSformer's own code uses nearest;
  - anything else missing, unexpected or of another shape is an error that lists the keys.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

OFFICIAL_PREFIX = "model."
_FRESH_PREFIXES = ("head.", "memory_rnn.")  # target keys a TimeSformer checkpoint cannot provide


class CheckpointMismatch(RuntimeError):
    pass


@dataclass
class LoadReport:
    loaded: list[str]
    fresh: list[str]    # target keys left at their initialisation
    dropped: list[str]  # source keys not used (the head)
    resized: list[str]


def read_timesformer_checkpoint(path: str | Path, trusted: bool = False) -> dict[str, torch.Tensor]:
    """The model state dict of a TimeSformer checkpoint, in VideoViT's names: an official one
    ('model_state'), a run's `checkpoint.pt` of `crt-repro train` ('model', VideoViT's own
    names: the paper's second stage starts from the first stage's run), or a bare state dict.

    The file is unpickled with `weights_only=True` unless `trusted` (needed only if the file
    holds objects other than tensors, numbers, strings and containers)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.init_from: no checkpoint file {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=not trusted)
    if "model_state" in ckpt:
        state = ckpt["model_state"]
    elif isinstance(ckpt.get("model"), dict) and "optimizer" in ckpt:   # crt_repro.checkpoint's
        state = ckpt["model"]
    else:
        state = ckpt
    return official_to_native(state)


def official_to_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the 'model.' prefix of the official TimeSformer wrapper (keys without it pass)."""
    return {k.removeprefix(OFFICIAL_PREFIX): v for k, v in state.items()}


def resize_pos_embed(pos: torch.Tensor, n_patches: int) -> torch.Tensor:
    """[1, 1 + P*P, d] -> [1, 1 + n_patches, d], interpolating the square patch grid."""
    cls_pos, grid = pos[:, :1], pos[:, 1:]
    src, dst = _side(grid.shape[1]), _side(n_patches)
    grid = grid.reshape(1, src, src, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(dst, dst), mode="bicubic", align_corners=False)
    return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, dst * dst, -1)], dim=1)


def resize_time_embed(time: torch.Tensor, n_frames: int) -> torch.Tensor:
    """[1, T0, d] -> [1, n_frames, d], linear interpolation over time."""
    return F.interpolate(time.transpose(1, 2), size=n_frames, mode="linear",
                         align_corners=False).transpose(1, 2)


def _side(n: int) -> int:
    side = round(n ** 0.5)
    if side * side != n:
        raise CheckpointMismatch(f"pos_embed holds {n} patch positions, not a square grid")
    return side


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor]) -> LoadReport:
    """Copy a TimeSformer state dict (VideoViT names) into `model` by the rules above."""
    state = dict(state)
    target = model.state_dict()
    dropped = sorted(k for k in state if k.startswith("head."))
    for k in dropped:
        del state[k]
    resized = []
    if "pos_embed" in state and "pos_embed" in target and state["pos_embed"].shape != target["pos_embed"].shape:
        state["pos_embed"] = resize_pos_embed(state["pos_embed"], target["pos_embed"].shape[1] - 1)
        resized.append("pos_embed")
    if "time_embed" in state and "time_embed" in target and state["time_embed"].shape != target["time_embed"].shape:
        state["time_embed"] = resize_time_embed(state["time_embed"], target["time_embed"].shape[1])
        resized.append("time_embed")
    fresh = sorted(k for k in target if k not in state and k.startswith(_FRESH_PREFIXES))
    missing = sorted(k for k in target if k not in state and k not in fresh)
    unexpected = sorted(k for k in state if k not in target)
    bad_shape = sorted(f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(target[k].shape)}"
                       for k in state if k in target and state[k].shape != target[k].shape)
    if missing or unexpected or bad_shape:
        lines = ["TimeSformer checkpoint does not fit the model:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", bad_shape)):
            if keys:
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(keys))
        raise CheckpointMismatch("\n".join(lines))
    model.load_state_dict(state, strict=False)
    return LoadReport(loaded=sorted(state), fresh=fresh, dropped=dropped, resized=resized)


def load_timesformer_k400(model: nn.Module, path: str | Path, trusted: bool = False) -> LoadReport:
    """Initialise `model` (TimeSformer or CR-ViT) from an official TimeSformer checkpoint file."""
    return load_backbone(model, read_timesformer_checkpoint(path, trusted))
