"""The adaptive softmax: a proper distribution, the full softmax without cutoffs, the same loss
by both of its paths, counted exactly, and the paper profile's WikiText-103 models at Table 6's
parameter counts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crt_repro import cost
from crt_repro.config import build_config
from crt_repro.models import build_model
from crt_repro.models.adaptive import AdaptiveSoftmax

D, V = 8, 40


def softmax(cutoffs):
    torch.manual_seed(0)
    return AdaptiveSoftmax(D, V, cutoffs).double()


def test_log_probabilities_over_the_vocabulary_sum_to_one():
    h = torch.randn(5, 3, D, dtype=torch.float64)
    lp = softmax([5, 12, 30]).log_probs(h)
    assert lp.shape == (5, 3, V)
    assert torch.allclose(lp.logsumexp(-1), torch.zeros(5, 3, dtype=torch.float64), atol=1e-6)


def test_without_cutoffs_it_is_the_full_softmax():
    a = softmax([])
    h, y = torch.randn(7, D, dtype=torch.float64), torch.randint(0, V, (7,))
    full = F.log_softmax(h @ a.weight.T, -1)
    assert torch.allclose(a.log_probs(h), full, atol=1e-6)
    assert torch.allclose(a.nll(h, y), F.cross_entropy(full, y, reduction="none"), atol=1e-6)


def test_the_loss_is_the_full_softmax_loss_of_its_distribution():
    """Scoring a target through its own cluster only (training) gives the loss, and the gradient,
    of the full distribution over the vocabulary."""
    a = softmax([5, 12, 30])
    h = torch.randn(64, D, dtype=torch.float64, requires_grad=True)
    y = torch.arange(64) % V  # every cluster has targets
    fast = a.nll(h, y).mean()
    full = F.cross_entropy(a.log_probs(h), y)
    assert fast.item() == pytest.approx(full.item(), abs=1e-6)
    g_fast, = torch.autograd.grad(fast, h)
    g_full, = torch.autograd.grad(full, h)
    assert torch.allclose(g_fast, g_full, atol=1e-6)


def tiny(model: str, adaptive: bool):
    return build_config("smoke", "synthetic", {
        "model": {"name": model, "rnn": "gru", "tie_embeddings": True, "adaptive": adaptive,
                  "adaptive_cutoffs": [10, 25]},
        "data": {"seg_len": 9}})


@pytest.mark.parametrize("model", ["transformer", "transformer_xl", "crt"])
def test_a_model_with_it_scores_as_its_logits_say_and_is_counted_exactly(model):
    torch.manual_seed(0)
    m = build_model(tiny(model, True), V).eval()
    assert m.head.out.weight is m.embed.weight  # tied input and output
    idx = torch.randint(0, V, (2, 10))
    hidden, _ = m(idx[:, :-1])
    assert m.head.loss(hidden, idx[:, 1:]).item() == pytest.approx(
        F.cross_entropy(m.head.logits(hidden).reshape(-1, V), idx[:, 1:].reshape(-1)).item(), abs=1e-5)
    c = cost.forward_cost(tiny(model, True), V)
    assert c["macs_fwd"] == c["formula_macs"]
    # Two tail clusters: two more head scores per token, and two more parameter rows.
    plain = cost.forward_cost(tiny(model, False), V)
    assert c["formula_macs"] - plain["formula_macs"] == 9 * 32 * 2
    assert c["params"] - plain["params"] == 2 * 32 + 2


def test_paper_profile_wt103_uses_it_for_every_model_at_table6_parameter_counts():
    """Paper Table 6 (16 layers, WikiText-103): 151M, 151M, 150M. The paper's Transformer is
    Transformer-XL's model without memory, with its relative-position parameters (W_r, u, v: 2.7M at
    16 x 410): so is the paper profile's; the sinusoidal one has 148.2M."""
    counts = {}
    for model, rnn in (("transformer", "gru"), ("transformer_xl", "gru"), ("crt", "gru")):
        cfg = build_config("paper", "wt103", {"model": {"name": model, "rnn": rnn, "n_layer": 16},
                                              "data": {"seg_len": 150}})
        assert cfg.model.adaptive and cfg.model.adaptive_cutoffs == [20000, 40000, 200000]
        counts[model] = cost.count_params(cost.build_eval_model(cfg, 267735, "meta")) / 1e6
    assert round(counts["transformer_xl"]) == 151 and round(counts["crt"]) == 150
    assert round(counts["transformer"]) == 151 and counts["transformer"] == pytest.approx(counts["transformer_xl"])
    absolute = build_config("paper", "wt103", {"model": {"name": "transformer", "n_layer": 16,
                                                         "baseline_positions": "absolute"}, "data": {"seg_len": 150}})
    assert cost.count_params(cost.build_eval_model(absolute, 267735, "meta")) / 1e6 == pytest.approx(148.2, abs=0.05)
    assert not build_config("paper", "ptb").model.adaptive
