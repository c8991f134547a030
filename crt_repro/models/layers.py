"""The pieces every language model here is built from.

The Transformer, Transformer-XL and CRT share embedding, block and softmax code and differ only in
what they carry from one segment to the next. A model is a ``LanguageModel``:

    hidden, state = model(idx, state)      # idx [B, n] token ids, state from the last segment
    loss = model.head.loss(hidden, targets)
    logits = model.head.logits(hidden)

``state`` is whatever crosses segments (None, a tensor, or a list of tensors);
``model.init_state(batch_size, device)`` starts a stream and ``detach_state`` cuts the gradient.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crt_repro.config import ModelConfig
from crt_repro.models.adaptive import AdaptiveSoftmax, effective_cutoffs

State = Tensor | list[Tensor] | None


def sinusoidal_positions(n: int, d: int, device: torch.device | None = None, offset: int = 0) -> Tensor:
    """[n, d] sinusoids of Vaswani et al. for positions offset .. offset+n-1."""
    pos = torch.arange(offset, offset + n, device=device, dtype=torch.float32)
    return sinusoid_table(pos, d)


def sinusoid_table(pos: Tensor, d: int) -> Tensor:
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2, device=pos.device, dtype=torch.float32) / d))
    angles = pos[:, None] * inv_freq[None, :]
    table = torch.zeros(len(pos), d, device=pos.device)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : d // 2])
    return table


class CausalSelfAttention(nn.Module):
    """Multi-head attention; queries from ``x``, keys and values from ``[context; x]``.

    Without context it is plain causal self-attention. With context (a prefix that comes before
    the segment) query i may also see every context position.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout_attn = cfg.dropout_attn
        self.drop = nn.Dropout(cfg.dropout)

    def _heads(self, t: Tensor) -> Tensor:
        b, n, d = t.shape
        return t.view(b, n, self.n_head, d // self.n_head).transpose(1, 2)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        kv_in = x if context is None else torch.cat([context, x], dim=1)
        k, v = self.kv(kv_in).chunk(2, dim=-1)
        q, k, v = self._heads(self.q(x)), self._heads(k), self._heads(v)
        p = self.dropout_attn if self.training else 0.0
        if context is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            m = context.shape[1]
            allowed = torch.ones(n, m + n, dtype=torch.bool, device=x.device).tril(diagonal=m)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        return self.drop(self.proj(y.transpose(1, 2).reshape(b, n, d)))

    def step(self, x: Tensor, kv) -> Tensor:
        """Decoding (eval): x [B, 1, d], one new position per stream, which attends to the
        positions cached in ``kv`` (a ``decode.KV``: all of them, or those ``kv.mask`` allows) and
        is appended to it first."""
        k, v = self.kv(x).chunk(2, dim=-1)
        k, v = kv.append(self._heads(k), self._heads(v))
        y = F.scaled_dot_product_attention(self._heads(self.q(x)), k, v, attn_mask=kv.mask)
        return self.proj(y.transpose(1, 2).reshape(x.shape))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_inner)
        self.proj = nn.Linear(cfg.d_inner, cfg.d_model)
        self.act = {"gelu": F.gelu, "relu": F.relu}[cfg.activation]
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm Transformer block. ``attn`` decides how positions and memory enter."""

    def __init__(self, cfg: ModelConfig, attn: nn.Module):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = attn
        self.ln_2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, memory: Tensor | None = None, **attn_kwargs) -> Tensor:
        context = None if memory is None else self.ln_1(memory)
        x = x + self.attn(self.ln_1(x), context, **attn_kwargs)
        return x + self.mlp(self.ln_2(x))

    def step(self, x: Tensor, kv, **attn_kwargs) -> Tensor:
        """One position per stream against the layer's cache (see ``decode``)."""
        x = x + self.attn.step(self.ln_1(x), kv, **attn_kwargs)
        return x + self.mlp(self.ln_2(x))


class LMHead(nn.Module):
    """Final LayerNorm, output dropout and the softmax layer (tied to the embedding if asked):
    a full softmax, or with ``model.adaptive`` the adaptive softmax (``models.adaptive``)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, embedding: nn.Embedding):
        super().__init__()
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout_emb)
        self.adaptive = cfg.adaptive and bool(effective_cutoffs(cfg.adaptive_cutoffs, vocab_size))
        if self.adaptive:
            self.out = AdaptiveSoftmax(cfg.d_model, vocab_size, cfg.adaptive_cutoffs,
                                       embedding.weight if cfg.tie_embeddings else None)
            return
        self.out = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.out.weight = embedding.weight

    def normed(self, h: Tensor) -> Tensor:
        return self.ln_f(h)

    def logits(self, h: Tensor) -> Tensor:
        """Scores whose softmax is the model's distribution (the adaptive softmax's log-probabilities)."""
        if self.adaptive:
            return self.out.log_probs(self.drop(self.ln_f(h)))
        return self.out(self.drop(self.ln_f(h)))

    def loss(self, h: Tensor, targets: Tensor) -> Tensor:
        """Mean negative log-likelihood in nats, computed in fp32 for a stable softmax."""
        if self.adaptive:
            return self.out.nll(self.drop(self.ln_f(h)), targets).mean()
        logits = self.logits(h).float()
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


class LanguageModel(nn.Module):
    """Token embedding, a stack of ``Block``s and the ``LMHead``; subclasses add positions/memory."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, make_attn=CausalSelfAttention):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.emb_drop = nn.Dropout(cfg.dropout_emb)
        self.blocks = nn.ModuleList(Block(cfg, make_attn(cfg)) for _ in range(cfg.n_layer))
        self.head = LMHead(cfg, vocab_size, self.embed)
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections keeps deep stacks stable at start.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") and ".blocks." in f".{name}":
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def embed_tokens(self, idx: Tensor) -> Tensor:
        # Scaled as in Vaswani et al. so that positional signals do not swamp 0.02-std embeddings.
        return self.embed(idx) * math.sqrt(self.cfg.d_model)

    def init_state(self, batch_size: int, device: torch.device) -> State:
        return None

    def detach_state(self, state: State) -> State:
        if state is None:
            return None
        if isinstance(state, Tensor):
            return state.detach()
        return [s.detach() for s in state]

    def forward(self, idx: Tensor, state: State = None) -> tuple[Tensor, State]:
        raise NotImplementedError
