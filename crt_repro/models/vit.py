"""TimeSformer (divided space-time attention) and CR-ViT, the paper's Compact Recurrent ViT.

TimeSformer (Bertasius et al. 2021, 'divided_space_time'): every frame is cut into patches; a
block first runs *time attention* (each patch position attends over its own T frames, followed
by its own `temporal_fc`), then *space attention* (the patches of one frame plus a copy of the
class token; the class token's T outputs are averaged), then an MLP. Learned space position
embeddings (class token + patch grid) and learned time embeddings (one per frame) are added once
at the input. Parameter names follow the official code so that a Kinetics-400 checkpoint maps
by stripping a prefix (see `crt_repro.video.checkpoint`).

CR-ViT (paper section 3, Figure 4), switched on by `ViTConfig.recurrent`:
  - a memory token m is prepended to every patch's temporal sequence in the time attention of
    every block, and only there; its own output is dropped. It passes through `temporal_norm1`
    like the other tokens (the paper is silent; this keeps its scale that of the tokens).
  - two iterations per clip (`n_iter`); m is zeros in iteration 1. After an iteration, the
    output except the class token goes through an RNN (GRU, or NCGRU via `rnn`) with initial
    state m; its last hidden state is the next iteration's m. The paper says the RNN sequence is
    the frames (A.3: "sequence length (number of frames per video) is set to 16"), so by default
    (`memory_scope="clip"`) the RNN runs over the T per-frame means of the patch outputs and m is
    one vector per clip, the paper's single memory vector; `memory_scope="patch"` instead runs
    the RNN over each patch position's T outputs and keeps one memory vector per position.
  - classifier input [cls, cls] in iteration 1 and [prev_cls, cls] in later ones, prev_cls
    being the previous iteration's output class token (after the final LayerNorm), so the head
    is Linear(2 d, n_classes).
  - from iteration 2 on, the class token entering the layers is the learned class token (plus
    its position embedding) plus prev_cls.
  - both iterations see the same frames (`iteration_frames="same"`, the paper's "two-iteration
    approach for each video" with 16 frames per video); `"split"` is the other reading: the
    input holds n_iter * n_frames frames and iteration k sees the k-th chunk.
  - gradients flow through m and prev_cls from the last iteration back into the first; nothing
    is detached (two iterations are the whole clip).

Loss (`loss_iterations`; the paper is silent): "all" (default) averages the cross-entropy of
every iteration's logits, "last" uses only the last iteration's. We default to "all" because the
paper specifies a classifier input for iteration 1 ([cls, cls]), which matters only if iteration
1's logits are used, and a loss on every iteration is what CRT does for every segment in the
language model. The prediction is always the last iteration's logits.

Input video: [B, T, C, H, W] (frames first, as the video datasets return them).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from crt_repro.config import rnn_kwargs


@dataclass
class ViTConfig:
    image_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    n_frames: int = 16            # frames per iteration
    n_classes: int = 31
    d_model: int = 768
    n_layer: int = 12
    n_head: int = 12
    mlp_ratio: float = 4.0
    dropout: float = 0.0          # embeddings, attention output projection, MLP
    attn_dropout: float = 0.0     # attention probabilities
    drop_path: float = 0.1        # stochastic depth, linear in depth from 0 (TimeSformer's 0.1)
    recurrent: bool = False       # False: TimeSformer; True: CR-ViT
    rnn: str = "gru"              # "gru" | "ncgru": the memory RNN, from crt_repro.models.rnn
    rnn_kwargs: dict = field(default_factory=dict)  # NCGRU options of make_rnn
    n_iter: int = 2               # CR-ViT iterations per clip
    iteration_frames: str = "same"  # "same" | "split"
    memory_scope: str = "clip"      # "clip" | "patch"
    loss_iterations: str = "all"    # "all" | "last"

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size or self.d_model % self.n_head:
            raise ValueError("image_size must be a multiple of patch_size, d_model of n_head")
        if self.iteration_frames not in ("same", "split"):
            raise ValueError(f"iteration_frames must be 'same' or 'split', not {self.iteration_frames!r}")
        if self.memory_scope not in ("clip", "patch"):
            raise ValueError(f"memory_scope must be 'clip' or 'patch', not {self.memory_scope!r}")
        if self.loss_iterations not in ("all", "last"):
            raise ValueError(f"loss_iterations must be 'all' or 'last', not {self.loss_iterations!r}")
        if self.recurrent and self.n_iter < 2:
            raise ValueError("CR-ViT needs n_iter >= 2")

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole rows (dim 0) of a residual branch with probability p."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class Attention(nn.Module):
    """Multi-head self-attention over [B, L, d]; qkv with bias as in TimeSformer's ViT-B."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.n_head, self.attn_dropout = cfg.n_head, cfg.attn_dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, L, d)))


class MLP(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        hidden = int(cfg.d_model * cfg.mlp_ratio)
        self.fc1 = nn.Linear(cfg.d_model, hidden)
        self.fc2 = nn.Linear(hidden, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class Block(nn.Module):
    """Divided space-time block: time attention, then space attention, then MLP (pre-LN)."""

    def __init__(self, cfg: ViTConfig, drop_path: float):
        super().__init__()
        d = cfg.d_model
        self.temporal_norm1 = nn.LayerNorm(d, eps=1e-6)
        self.temporal_attn = Attention(cfg)
        self.temporal_fc = nn.Linear(d, d)
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = MLP(cfg)
        self.drop_path = drop_path

    def forward(self, cls: torch.Tensor, x: torch.Tensor, memory: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """cls [B, d], x [B, N, T, d] (patch-major), memory [B*N, d] or None -> (cls, x)."""
        B, N, T, d = x.shape
        dp = self._drop_path
        # Time attention: each patch position over its T frames (and the memory token).
        xt = x.reshape(B * N, T, d)
        if memory is not None:
            xt = torch.cat([memory.unsqueeze(1), xt], dim=1)
        yt = dp(self.temporal_attn(self.temporal_norm1(xt)))
        if memory is not None:
            yt = yt[:, 1:]  # the memory token's own output is dropped
        x = x + self.temporal_fc(yt).view(B, N, T, d)
        # Space attention: within each frame, its N patches and a copy of the class token.
        xs = x.transpose(1, 2).reshape(B * T, N, d)
        xs = torch.cat([cls.repeat_interleave(T, dim=0).unsqueeze(1), xs], dim=1)
        ys = dp(self.attn(self.norm1(xs)))
        cls = cls + ys[:, 0].view(B, T, d).mean(dim=1)  # the class token's T copies averaged
        x = x + ys[:, 1:].view(B, T, N, d).transpose(1, 2)
        # MLP on every token; one stochastic-depth draw per clip, as TimeSformer.
        tokens = torch.cat([cls.unsqueeze(1), x.reshape(B, N * T, d)], dim=1)
        tokens = tokens + dp(self.mlp(self.norm2(tokens)))
        return tokens[:, 0], tokens[:, 1:].reshape(B, N, T, d)

    def _drop_path(self, y: torch.Tensor) -> torch.Tensor:
        return drop_path(y, self.drop_path, self.training)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.d_model, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """[B', C, H, W] -> [B', N, d]"""
        return self.proj(frames).flatten(2).transpose(1, 2)


class VideoViT(nn.Module):
    """TimeSformer (`cfg.recurrent=False`) or CR-ViT (`cfg.recurrent=True`)."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.n_patches + 1, d))
        self.time_embed = nn.Parameter(torch.zeros(1, cfg.n_frames, d))
        self.embed_drop = nn.Dropout(cfg.dropout)
        rates = torch.linspace(0, cfg.drop_path, cfg.n_layer).tolist()
        self.blocks = nn.ModuleList(Block(cfg, p) for p in rates)
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(2 * d if cfg.recurrent else d, cfg.n_classes)
        self._init_weights()
        self.memory_rnn = _make_memory_rnn(cfg) if cfg.recurrent else None

    def _init_weights(self) -> None:
        """TimeSformer's init: truncated normal 0.02 for linear layers and the class/position
        embeddings, zero time embeddings, and zero `temporal_fc` in every block but the first,
        so that a fresh model starts close to a per-frame image ViT."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        for block in self.blocks[1:]:
            nn.init.zeros_(block.temporal_fc.weight)

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        """[B, T, C, H, W] -> patch tokens [B, N, T, d] with space and time embeddings."""
        B, T, C, H, W = video.shape
        cfg = self.cfg
        if (T, H, W) != (cfg.n_frames, cfg.image_size, cfg.image_size):
            raise ValueError(f"expected {cfg.n_frames} frames of {cfg.image_size}px, got "
                             f"{T} of {H}x{W}")
        x = self.patch_embed(video.flatten(0, 1)).view(B, T, cfg.n_patches, cfg.d_model)
        x = x.transpose(1, 2) + self.pos_embed[:, 1:].unsqueeze(2) + self.time_embed.unsqueeze(1)
        return self.embed_drop(x)

    def step(self, patches: torch.Tensor, memory: torch.Tensor | None = None,
             prev_cls: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pass through the layers.

        patches [B, N, T, d] from `embed`; memory [B, d] ("clip") or [B*N, d] ("patch") or None
        (TimeSformer); prev_cls [B, d], the previous iteration's output class token, or None in
        the first iteration. Returns (logits [B, n_classes], cls [B, d], patches [B, N, T, d]),
        the last two after the final LayerNorm.
        """
        B, N = patches.shape[:2]
        cls = self.embed_drop((self.cls_token + self.pos_embed[:, :1]).view(1, -1).expand(B, -1))
        if prev_cls is not None:
            cls = cls + prev_cls
        if memory is not None and self.cfg.memory_scope == "clip":
            memory = memory.repeat_interleave(N, dim=0)
        for block in self.blocks:
            cls, patches = block(cls, patches, memory)
        cls, patches = self.norm(cls), self.norm(patches)
        if self.cfg.recurrent:
            head_in = torch.cat([cls if prev_cls is None else prev_cls, cls], dim=-1)
        else:
            head_in = cls
        return self.head(head_in), cls, patches

    def update_memory(self, patches: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """The memory RNN over an iteration's non-class outputs [B, N, T, d], from state m."""
        B, N, T, d = patches.shape
        if self.cfg.memory_scope == "clip":
            seq = patches.mean(dim=1)                  # [B, T, d]: one step per frame
        else:
            seq = patches.reshape(B * N, T, d)         # [B*N, T, d]: per patch position
        _, h_last = self.memory_rnn(seq, memory)
        return h_last

    def initial_memory(self, video: torch.Tensor) -> torch.Tensor:
        n = video.shape[0] * (self.cfg.n_patches if self.cfg.memory_scope == "patch" else 1)
        return video.new_zeros(n, self.cfg.d_model)

    def forward_iterations(self, video: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every iteration, [B, n_classes] each (one for TimeSformer)."""
        cfg = self.cfg
        if not cfg.recurrent:
            return [self.step(self.embed(video))[0]]
        if cfg.iteration_frames == "split":
            embedded = [self.embed(clip) for clip in video.chunk(cfg.n_iter, dim=1)]
        else:
            embedded = [self.embed(video)] * cfg.n_iter
        memory, prev_cls, logits = self.initial_memory(video), None, []
        for k, patches in enumerate(embedded):
            out, cls, patches = self.step(patches, memory, prev_cls)
            logits.append(out)
            if k < cfg.n_iter - 1:
                memory = self.update_memory(patches, memory)
            prev_cls = cls
        return logits

    def forward(self, video: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """video [B, T, C, H, W], targets [B] class ids -> (logits [B, n_classes], loss or None).

        The logits are the last iteration's; the loss follows `cfg.loss_iterations`.
        """
        logits = self.forward_iterations(video)
        loss = None
        if targets is not None:
            used = logits if self.cfg.loss_iterations == "all" else logits[-1:]
            loss = torch.stack([F.cross_entropy(lg, targets) for lg in used]).mean()
        return logits[-1], loss


def _make_memory_rnn(cfg: ViTConfig) -> nn.Module:
    from crt_repro.models.rnn import make_rnn  # GRU / NCGRU live with the language models' RNNs
    return make_rnn(cfg.rnn, cfg.d_model, cfg.d_model, **cfg.rnn_kwargs)


def from_model_config(m, n_classes: int, recurrent: bool) -> VideoViT:
    """Build from the project's `crt_repro.config.ModelConfig` (the model registry's entry)."""
    model = VideoViT(ViTConfig(
        image_size=m.image_size, patch_size=m.patch_size, n_frames=m.n_frames, n_classes=n_classes,
        d_model=m.d_model, n_layer=m.n_layer, n_head=m.n_head, mlp_ratio=m.d_inner / m.d_model,
        dropout=m.dropout, attn_dropout=m.dropout_attn, recurrent=recurrent, rnn=m.rnn,
        rnn_kwargs=rnn_kwargs(m), n_iter=m.vit_iterations, drop_path=m.vit_drop_path,
        iteration_frames=m.vit_iteration_frames, memory_scope=m.vit_memory_scope,
        loss_iterations=m.vit_loss_iterations))
    if m.init_from:
        from crt_repro.video.checkpoint import load_timesformer_k400

        load_timesformer_k400(model, m.init_from)
    return model


def build_timesformer(m, n_classes: int) -> VideoViT:
    return from_model_config(m, n_classes, recurrent=False)


def build_crvit(m, n_classes: int) -> VideoViT:
    return from_model_config(m, n_classes, recurrent=True)
