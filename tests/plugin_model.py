"""An outside model, written as a user of the harness would write one (docs/adding-a-model.md): a GRU language model, not part of the package, run as
``--model plugin_model:GRULanguageModel`` with this folder on PYTHONPATH.

It meets the contract of ``crt_repro.models.layers``: ``forward(idx, state) -> (hidden, state)``
with the batch first in every state tensor, ``init_state``, ``detach_state``, and the shared
softmax layer ``LMHead`` as ``self.head``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from crt_repro.config import ModelConfig
from crt_repro.models.layers import LMHead


class GRULanguageModel(nn.Module):
    # Vectors carried from one segment to the next (the tables' memory column): one per layer.
    @staticmethod
    def memory_len(cfg: ModelConfig) -> int:
        return cfg.n_layer

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.rnn = nn.GRU(cfg.d_model, cfg.d_model, num_layers=cfg.n_layer, batch_first=True)
        self.head = LMHead(cfg, vocab_size, self.embed)

    def init_state(self, batch_size: int, device: torch.device) -> Tensor:
        return torch.zeros(batch_size, self.rnn.num_layers, self.rnn.hidden_size, device=device)

    def detach_state(self, state: Tensor) -> Tensor:
        return state.detach()

    def forward(self, idx: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if state is None:
            state = self.init_state(idx.shape[0], idx.device)
        # nn.GRU keeps its state layer-first; the contract wants the batch first.
        hidden, h = self.rnn(self.embed(idx), state.transpose(0, 1).contiguous())
        return hidden, h.transpose(0, 1)
