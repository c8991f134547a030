"""Adaptive softmax (Grave et al. 2017) as Transformer-XL uses it on WikiText-103.

The vocabulary, sorted by frequency (ours is: ``crt_repro.data`` numbers words by count), is cut
at ``cutoffs`` (Dai et al.: 20000, 40000, 200000) into a head of the frequent words and tail
clusters. The head softmax scores the head words and one token per tail cluster; a word of tail
cluster i has ``log p = log p_head(cluster i) + log p_i(word)``, where ``p_i`` is a softmax over
that cluster's words alone. Training and scoring a target therefore pay for the head and for the
cluster of that target only, not for the whole 267k-word vocabulary.

Dai et al.'s ``div_val`` is 1 at the base widths (16 x 410): every cluster has the full width
d_model, so their projections are identities and left out, and the adaptive *input* is one
d_model embedding table, which is ``LanguageModel.embed`` as it is. Input and output are tied as
theirs: cluster i's output rows are the embedding rows of its words. Their per-word output bias
is left out like the full softmax layer's here (``LMHead``), so the two differ only in the
clustering. What the adaptive softmax adds: the head's cluster tokens, ``cluster_weight``
[clusters, d] and ``cluster_bias`` [clusters].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _at_least_fp32(x: Tensor) -> Tensor:
    """bf16/fp16 scores (autocast) go to fp32 for a stable softmax; fp64 stays fp64."""
    return x.float() if x.element_size() < 4 else x


def effective_cutoffs(cutoffs: list[int], vocab_size: int) -> list[int]:
    """The cutoffs that split this vocabulary (those below its size); none: a full softmax."""
    return [c for c in cutoffs if 0 < c < vocab_size]


class AdaptiveSoftmax(nn.Module):
    def __init__(self, d_model: int, vocab_size: int, cutoffs: list[int], weight: nn.Parameter | None = None):
        super().__init__()
        self.edges = [0, *effective_cutoffs(cutoffs, vocab_size), vocab_size]
        self.register_buffer("bounds", torch.tensor(self.edges[1:-1], dtype=torch.long), persistent=False)
        self.weight = weight if weight is not None else nn.Parameter(torch.randn(vocab_size, d_model) * 0.02)
        n_tail = len(self.edges) - 2
        self.cluster_weight = nn.Parameter(torch.randn(n_tail, d_model) * 0.02)  # as the word rows
        self.cluster_bias = nn.Parameter(torch.zeros(n_tail))

    def _head_log_probs(self, h: Tensor) -> Tensor:
        """[N, head words + clusters]: the head softmax."""
        head = self.edges[1]
        logits = torch.cat([F.linear(h, self.weight[:head]), F.linear(h, self.cluster_weight, self.cluster_bias)], -1)
        return F.log_softmax(_at_least_fp32(logits), dim=-1)

    def _tail_log_probs(self, h: Tensor, i: int) -> Tensor:
        lo, hi = self.edges[i + 1], self.edges[i + 2]
        return F.log_softmax(_at_least_fp32(F.linear(h, self.weight[lo:hi])), dim=-1)

    def log_probs(self, h: Tensor) -> Tensor:
        """[..., vocab] log-probabilities of every word (every cluster for every position)."""
        shape = h.shape[:-1]
        h = h.reshape(-1, h.shape[-1])
        head_lp = self._head_log_probs(h)
        head = self.edges[1]
        parts = [head_lp[:, :head]]
        for i in range(len(self.edges) - 2):
            parts.append(head_lp[:, head + i, None] + self._tail_log_probs(h, i))
        return torch.cat(parts, -1).view(*shape, -1)

    def nll(self, h: Tensor, targets: Tensor) -> Tensor:
        """[N] negative log-likelihood of each target; each tail runs on its own targets only."""
        h, targets = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
        head_lp = self._head_log_probs(h)
        head = self.edges[1]
        # Tail words take their cluster's token in the head; the cluster adds its own term below.
        cluster = torch.bucketize(targets, self.bounds, right=True)
        head_target = torch.where(cluster == 0, targets, head + cluster - 1)
        nll = -head_lp.gather(1, head_target[:, None]).squeeze(1)
        for i in range(len(self.edges) - 2):
            rows = (cluster == i + 1).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            tail_lp = self._tail_log_probs(h[rows], i)
            word = (targets[rows] - self.edges[i + 1])[:, None]
            nll = nll.index_add(0, rows, -tail_lp.gather(1, word).squeeze(1))
        return nll
