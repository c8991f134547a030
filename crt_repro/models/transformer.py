"""The fixed-length baseline: every segment is modelled alone, with sinusoidal positions.

Nothing crosses segments, in training or in evaluation; this is the paper's "Transformer" row.
"""
from __future__ import annotations

from torch import Tensor

from crt_repro.models.layers import LanguageModel, State, sinusoidal_positions


class Transformer(LanguageModel):
    def forward(self, idx: Tensor, state: State = None) -> tuple[Tensor, State]:
        n = idx.shape[1]
        x = self.embed_tokens(idx) + sinusoidal_positions(n, self.cfg.d_model, idx.device)
        x = self.emb_drop(x)
        for block in self.blocks:
            x = block(x)
        return x, None
