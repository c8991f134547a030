"""Every registered language model, ours or a plugin, is checked the same way: causal, everything
that crosses segments goes through ``state`` (per stream), ``detach_state`` cuts the gradient, and
fvcore counts its cost.

The names are the package's models, the installed ``crt_repro.models`` entry points, and the
outside model of ``tests/plugin_model.py`` (given as ``module:Class``, as a user would)."""
from __future__ import annotations

from importlib import metadata

import pytest
import torch

from crt_repro.config import Config, DataConfig, ModelConfig, build_config
from crt_repro.cost import forward_cost
from crt_repro.model_specs import ENTRY_POINT_GROUP, names
from crt_repro.models import build_model

V, SEG = 23, 6
PLUGIN = "plugin_model:GRULanguageModel"
NAMES = [*names("lm"), *sorted(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)), PLUGIN]


def tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    mcfg = ModelConfig(name=name, rnn="gru", n_layer=2, d_model=16, n_head=2, d_inner=32, dropout=0.0)
    return build_model(Config(model=mcfg, data=DataConfig(seg_len=SEG)), V).eval()


def logits_of(model, idx, state):
    hidden, state = model(idx, state)
    return model.head.logits(hidden), state


def tensors(state) -> list[torch.Tensor]:
    return [] if state is None else [state] if isinstance(state, torch.Tensor) else list(state)


@pytest.mark.parametrize("name", NAMES)
def test_causal_within_and_across_segments(name):
    model = tiny(name)
    idx = torch.randint(0, V, (2, 2 * SEG), generator=torch.Generator().manual_seed(1))
    bumped = idx.clone()
    bumped[:, SEG + 3] = (idx[:, SEG + 3] + 1) % V
    with torch.no_grad():
        out = []
        for x in (idx, bumped):
            a, s = logits_of(model, x[:, :SEG], model.init_state(2, x.device))
            b, _ = logits_of(model, x[:, SEG:], s)
            out.append((a, b))
    (a1, a2), (b1, b2) = out
    assert torch.equal(a1, b1), "a token of segment 2 changed a logit of segment 1"
    torch.testing.assert_close(a2[:, :3], b2[:, :3], rtol=0, atol=1e-6, msg="a later token changed an earlier logit")
    assert not torch.allclose(a2[:, 3], b2[:, 3]), "the perturbed token did not change its own logit"


@pytest.mark.parametrize("name", NAMES)
def test_only_the_state_crosses_segments_and_streams_stay_apart(name):
    """Segment 2 given segment 1's state gives the same logits after the model has run another
    stream in between (nothing hides in the module), and stream 0's logits do not depend on
    stream 1's tokens (the batch rows are independent streams: the memory-reach swap control
    hands a state from one to another)."""
    model = tiny(name)
    g = torch.Generator().manual_seed(2)
    idx, other = torch.randint(0, V, (2, 2, 2 * SEG), generator=g)
    with torch.no_grad():
        _, s = logits_of(model, idx[:, :SEG], model.init_state(2, idx.device))
        first, _ = logits_of(model, idx[:, SEG:], s)
        logits_of(model, other[:, :SEG], model.init_state(2, idx.device))
        again, _ = logits_of(model, idx[:, SEG:], s)
        mixed = torch.stack([idx[0], other[1]])
        _, s_mixed = logits_of(model, mixed[:, :SEG], model.init_state(2, idx.device))
        row0, _ = logits_of(model, mixed[:, SEG:], s_mixed)
    assert torch.equal(first, again)
    torch.testing.assert_close(row0[0], first[0], rtol=0, atol=1e-5)
    assert all(t.shape[0] == 2 for t in tensors(s)), "every state tensor has the batch first"


@pytest.mark.parametrize("name", NAMES)
def test_detach_state_cuts_the_gradient(name):
    model = tiny(name).train()
    idx = torch.randint(0, V, (2, SEG), generator=torch.Generator().manual_seed(3))
    _, state = model(idx, model.init_state(2, idx.device))
    assert not any(t.requires_grad for t in tensors(model.detach_state(state)))


@pytest.mark.parametrize("name", NAMES)
def test_fvcore_counts_every_model(name):
    """forward_cost raises if a matrix product would go uncounted; ours match their formula."""
    cfg = build_config("smoke", "synthetic", {"model": {"name": name, "rnn": "gru", "d_model": 16, "n_head": 2,
                                                        "d_inner": 32, "n_layer": 2}, "data": {"seg_len": SEG}})
    cost = forward_cost(cfg, V)
    assert cost["macs_fwd"] > cost["params"] > 0
    if name in names("lm"):
        assert cost["macs_fwd"] == cost["formula_macs"]


class NoSharedHead(torch.nn.Module):
    def __init__(self, cfg, vocab_size):
        super().__init__()
        self.out = torch.nn.Linear(cfg.d_model, vocab_size)

    def init_state(self, batch_size, device):
        return None

    def detach_state(self, state):
        return state

    def forward(self, idx, state=None):
        raise AssertionError("never called")


def test_a_plugin_off_the_contract_is_refused_in_one_line(capsys, tmp_path):
    from crt_repro.cli import main

    with pytest.raises(ValueError, match="model.head must be the shared"):
        tiny("test_registry:NoSharedHead")
    assert main(["train", "--profile", "smoke", "--dataset", "synthetic", "--model", "no_such_module:Model",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot import 'Model' from 'no_such_module'" in err, err
