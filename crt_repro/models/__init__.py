"""Building a model: ``build_model(cfg, n_out)`` for every model name the CLI accepts.

Every model, ours or from outside the package, is found through its spec
(``crt_repro.model_specs``): ``model.name`` is one of ours, ``package.module:Class`` or the name of
a ``crt_repro.models`` entry point (docs/adding-a-model.md). The class is called as
``Class(model_cfg, n_out)`` with the settings its name fixes, and a language model must meet the
contract of ``crt_repro.models.layers``: ``forward(idx, state) -> (hidden, state)``,
``init_state(batch_size, device)``, ``detach_state(state)``, and the shared softmax layer as
``model.head`` (an ``LMHead``), so that every model's loss and logits are computed alike.
``check_contract`` refuses a model that lacks any of them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from crt_repro.model_specs import load

if TYPE_CHECKING:
    from torch import nn

    from crt_repro.config import Config


def check_contract(model: nn.Module, name: str) -> nn.Module:
    from crt_repro.models.layers import LMHead

    missing = [a for a in ("init_state", "detach_state", "forward") if not callable(getattr(model, a, None))]
    if missing:
        raise ValueError(f"model.name={name!r}: the model has no {', '.join(missing)} (see crt_repro.models.layers)")
    if not isinstance(getattr(model, "head", None), LMHead):
        raise ValueError(f"model.name={name!r}: model.head must be the shared crt_repro.models.layers.LMHead")
    return model


def build_model(cfg: Config, n_out: int) -> nn.Module:
    """``n_out`` is the vocabulary size of a language model or the class count of a video model."""
    model = load(cfg.spec.cls)(cfg.resolved_model(), n_out)
    return model if cfg.is_video else check_contract(model, cfg.model.name)
