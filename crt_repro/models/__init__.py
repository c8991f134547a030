"""Model registry: ``build_model(cfg, vocab_size)`` for every model name the CLI accepts.

A model from outside the package joins on the same terms as ours (README, "How to add your own
model"): ``model.name`` is either ``package.module:Class`` or the name of a ``crt_repro.models``
entry point of an installed distribution. The class is called as ``Class(model_cfg, vocab_size)``
and must meet the contract of ``crt_repro.models.layers``: ``forward(idx, state) -> (hidden,
state)``, ``init_state(batch_size, device)``, ``detach_state(state)``, and the shared softmax
layer as ``model.head`` (an ``LMHead``), so that every model's loss and logits are computed alike.
``check_contract`` refuses a model that lacks any of them.
"""
from __future__ import annotations

import dataclasses
from importlib import import_module, metadata

from torch import nn

from crt_repro.config import Config

# name -> "module:Class"; imported lazily so that a language-model run never imports video code.
REGISTRY = {
    "transformer": "crt_repro.models.transformer:build_transformer",  # model.baseline_positions
    "transformer_xl": "crt_repro.models.transformer_xl:TransformerXL",
    "crt": "crt_repro.models.crt:CRT",  # model.memory / model.pos_encoding from the config
    # Table 8 ablations: CRT with memory / pos_encoding fixed by the name.
    "transformer_rnn_memory": "crt_repro.models.crt:TransformerRNNMemory",  # memory + sinusoidal
    "transformer_rnn_posenc": "crt_repro.models.crt:TransformerRNNPosEnc",  # no memory + rnn_add
    "rmt": "crt_repro.models.rmt:RMT",  # not in the paper: Bulatov et al.'s Recurrent Memory Transformer
    "timesformer": "crt_repro.models.vit:build_timesformer",
    "crvit": "crt_repro.models.vit:build_crvit",
}
ENTRY_POINT_GROUP = "crt_repro.models"


def model_class(name: str):
    """The class (or factory) that ``model.name`` names: ours, ``module:Class``, or an entry point."""
    target = REGISTRY.get(name)
    if target is None and ":" not in name:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP).select(name=name)
        if not eps:
            raise ValueError(f"model.name={name!r} is not implemented (have: {', '.join(REGISTRY)}, a "
                             f"package.module:Class, or a {ENTRY_POINT_GROUP!r} entry point)")
        return next(iter(eps)).load()
    module, _, attr = (target or name).partition(":")
    try:
        return getattr(import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"model.name={name!r}: cannot import {attr!r} from {module!r} ({e})") from None


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
    model_cfg = cfg.model
    if model_cfg.name == "transformer_xl" and model_cfg.mem_len is None:
        model_cfg = dataclasses.replace(model_cfg, mem_len=cfg.data.seg_len)
    model = model_class(model_cfg.name)(model_cfg, n_out)
    return model if cfg.model.name in REGISTRY else check_contract(model, cfg.model.name)
