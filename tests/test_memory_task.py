"""Memory carries information across segments: a key at the start of a stream must be recalled
at the end of the stream's third segment.

Stream (3 segments of 8 tokens): ``[key, noise x 22, marker]``; the target at the marker is the
key (one of 4: chance is 25%). Only that prediction is trained and scored; every step draws fresh
streams, so nothing can be memorised but the rule.

* The Transformer sees one segment and cannot know the key.
* CRT must carry it in its memory vector across two segment boundaries (the gradient flows
  through m along the stream). NCGRU, the paper's main cell, learns this within 120 steps for
  every seed we tried (0-5); a GRU memory needs about 300 steps, so the test uses NCGRU.
* Transformer-XL reaches back at most ``mem_len * n_layer`` tokens before its segment (one hop of
  mem_len per layer). The key is 16 tokens before the marker's segment: mem_len = 16 puts it one
  hop away (learned); mem_len = 7 puts it out of reach (14 < 16: chance). mem_len = 8 would make
  it reachable only in two hops through a noise token's hidden state, which 300 steps do not learn.
"""
from __future__ import annotations

import pytest
import torch

from crt_repro.config import Config, DataConfig, ModelConfig
from crt_repro.models import build_model
from crt_repro.train import post_step

N_KEYS, MARKER, N_NOISE = 4, 4, 8
VOCAB = N_KEYS + 1 + N_NOISE
SEG, N_SEG = 8, 3
STEPS, BATCH, LR = 120, 64, 3e-3



def batch(g: torch.Generator, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    keys = torch.randint(0, N_KEYS, (b,), generator=g)
    idx = torch.randint(N_KEYS + 1, VOCAB, (b, SEG * N_SEG), generator=g)
    idx[:, 0] = keys
    idx[:, -1] = MARKER
    return idx, keys


def answer_hidden(model, idx: torch.Tensor) -> torch.Tensor:
    """Hidden state at the marker after running the stream segment by segment, state carried."""
    state = model.init_state(idx.shape[0], idx.device)
    for s in range(N_SEG):
        hidden, state = model(idx[:, s * SEG : (s + 1) * SEG], state)
    return hidden[:, -1:]


def train_and_score(name: str, steps: int = STEPS, seed: int = 0, **extra) -> float:
    """Accuracy on the key of 512 fresh streams after ``steps`` Adam steps."""
    torch.manual_seed(seed)
    mcfg = ModelConfig(name=name, rnn="ncgru", n_layer=2, d_model=32, n_head=2, d_inner=64, dropout=0.0,
                       tie_embeddings=False, **extra)
    model = build_model(Config(model=mcfg, data=DataConfig(seg_len=SEG)), VOCAB)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        idx, keys = batch(g, BATCH)
        loss = model.head.loss(answer_hidden(model, idx), keys[:, None])
        opt.zero_grad()
        loss.backward()
        opt.step()
        post_step(model, step)  # NCGRU refreshes its cached inverse, as in the engine
    model.eval()
    with torch.no_grad():
        idx, keys = batch(torch.Generator().manual_seed(10_000 + seed), 512)
        pred = model.head.logits(answer_hidden(model, idx))[:, 0].argmax(-1)
    return (pred == keys).float().mean().item()


@pytest.mark.parametrize("name,extra", [("crt", {}), ("transformer_xl", {"mem_len": 2 * SEG})])
def test_memory_models_recall_the_key(name, extra):
    acc = train_and_score(name, **extra)
    assert acc > 0.9, acc


@pytest.mark.parametrize("name,extra", [("transformer", {}), ("transformer_xl", {"mem_len": 7})])
def test_models_without_reach_stay_at_chance(name, extra):
    acc = train_and_score(name, **extra)
    assert acc < 0.4, acc  # chance is 0.25; 512 test streams
