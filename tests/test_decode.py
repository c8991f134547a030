"""Token-by-token decoding (``model.step``) gives the segment-at-a-time forward's logits."""
from __future__ import annotations

import pytest
import torch

from crt_repro.config import Config, DataConfig, ModelConfig
from crt_repro.models import build_model
from crt_repro.models.decode import decode, segment_logits

V, SEG = 23, 5
MODELS = [
    ("transformer", "gru", {}),
    ("transformer", "gru", {"baseline_positions": "relative"}),
    ("transformer_xl", "gru", {}),
    ("transformer_xl", "gru", {"mem_len": 3}),  # shorter than a segment
    ("transformer_xl", "gru", {"mem_len": 7, "eval_mem_len": 9}),  # longer, and longer in eval
    ("crt", "gru", {}),
    ("crt", "ncgru", {}),
    ("crt", "gru", {"pos_encoding": "rnn_replace", "pos_rnn_init": "zeros", "memory_input": "raw"}),
    ("crt", "ncgru", {"rnn_reset": "before"}),
    ("transformer_rnn_memory", "ncgru", {}),
    ("transformer_rnn_memory", "gru", {"baseline_positions": "relative"}),
    ("transformer_rnn_posenc", "gru", {}),
]
IDS = [f"{n}-{r}" + "".join(f"-{k}={v}" for k, v in e.items()) for n, r, e in MODELS]


@pytest.fixture(autouse=True)
def float64():
    """Float64 throughout (XL's memory and sinusoids are made in the default dtype)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def tiny(name, rnn, **extra):
    torch.manual_seed(0)
    mcfg = ModelConfig(name=name, rnn=rnn, n_layer=2, d_model=16, n_head=2, d_inner=32, dropout=0.0, **extra)
    return build_model(Config(model=mcfg, data=DataConfig(seg_len=SEG)), V).eval()


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("name,rnn,extra", MODELS, ids=IDS)
def test_decode_equals_segment_forward(name, rnn, extra, batch):
    """Over 3.4 segments (the last one partial), float64: every token's logits and, where the
    state is CRT's memory, the memory the cache carries after each segment (the memory RNN steps
    per token in decoding, over the whole segment in the forward)."""
    model = tiny(name, rnn, **extra)
    torch.manual_seed(1)
    tokens = torch.randint(0, V, (batch, 3 * SEG + 2))
    ref = segment_logits(model, tokens, SEG)
    out = decode(model, tokens, SEG)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    cpu = torch.device("cpu")
    state, cache = model.init_state(batch, cpu), model.init_cache(batch, SEG, cpu)
    if not isinstance(state, torch.Tensor):  # CRT's memory; XL's state is a list, the others' None
        return
    with torch.no_grad():
        for segment in tokens[:, : 3 * SEG].split(SEG, dim=1):
            _, state = model(segment, state)
            for token in segment.unbind(1):
                _, cache = model.step(token, cache)
            torch.testing.assert_close(cache.carry["m"], state, rtol=1e-10, atol=1e-10)


def test_cache_holds_what_each_model_carries():
    """At a segment boundary: nothing (Transformer), mem_len positions of keys and values per
    layer (XL), one vector (CRT); within a segment CRT holds n + 1 positions and two RNN states."""
    d, layers = 16, 2
    sizes = {}
    for name in ("transformer", "transformer_xl", "crt"):
        model = tiny(name, "gru")
        cache = model.init_cache(1, SEG, torch.device("cpu"))
        seen = []
        for t in torch.randint(0, V, (2 * SEG,)):
            _, cache = model.step(t[None], cache)
            seen.append(cache.nbytes())
        sizes[name] = seen
    f64 = 8
    assert sizes["transformer"][SEG - 1] == 0 and sizes["transformer"][SEG - 2] == layers * 2 * (SEG - 1) * d * f64
    assert sizes["transformer_xl"][2 * SEG - 1] == layers * 2 * SEG * d * f64  # mem_len = seg_len
    assert max(sizes["transformer_xl"]) == layers * 2 * (2 * SEG - 1) * d * f64
    assert sizes["crt"][SEG - 1] == d * f64
    # n - 1 tokens + the memory token per layer, the two RNN states (no buffer of outputs)
    assert max(sizes["crt"]) == layers * 2 * SEG * d * f64 + 2 * d * f64


def test_step_rejects_a_segment_of_tokens():
    model = tiny("crt", "gru")
    with pytest.raises(ValueError, match=r"shape \[B\]"):
        model.step(torch.zeros(1, 3, dtype=torch.long), model.init_cache(1, SEG, torch.device("cpu")))
