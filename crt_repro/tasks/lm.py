"""Language modelling over B parallel streams cut into consecutive segments.

Every model sees the same streams in the same order. One optimiser step covers
``optim.bptt_segments`` consecutive segments; the carried state (CRT's memory vector, XL's hidden
states) is detached at the start of each step and reset at the start of each epoch, and it is
carried over the whole stream in evaluation. On the memory-reach corpus evaluation also scores
recall (``crt_repro.memory_reach``).

In data-parallel training (``crt_repro.distributed``) a task trains only its rank's ``streams``
of the B; budgets, epochs and items stay those of all B streams, and its ``state_dict`` holds the
state of all of them, gathered from every rank.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from crt_repro import distributed
from crt_repro.config import Config, ConfigError, OptimConfig
from crt_repro.data import SegmentStream, batchify, corpus_for


class LMTask:
    def __init__(self, cfg: Config, device: torch.device, streams: slice | None = None):
        self.cfg = cfg
        self.device = device
        self.streams = streams
        corpus = corpus_for(cfg.data)
        self.corpus = corpus
        self.n_out = len(corpus.vocab)
        train = corpus.train
        if cfg.data.max_train_tokens is not None:
            train = train[: cfg.data.max_train_tokens]
        streams = batchify(train, cfg.data.batch_size)
        # A stream of T tokens has T - 1 input positions; a longer segment would silently be cut
        # to the stream (and cost its full length in memory and time).
        if cfg.data.seg_len > streams.shape[1] - 1:
            raise ConfigError(
                f"data.seg_len={cfg.data.seg_len} is longer than a training stream: {train.numel():,} training "
                f"tokens of {cfg.data.dataset} in data.batch_size={cfg.data.batch_size} streams give "
                f"{streams.shape[1] - 1:,} input positions per stream; lower --seg-len or data.batch_size")
        self.n_streams = cfg.data.batch_size
        if self.streams is not None:
            streams = streams[self.streams]
            self.n_streams = streams.shape[0]
        self.train_stream = SegmentStream(streams.to(device), cfg.data.seg_len)
        self.window = cfg.optim.bptt_segments
        self.steps_per_epoch = math.ceil(len(self.train_stream) / self.window)
        # Targets per stream in each step of an epoch (the epoch's last step may be short).
        t = self.train_stream.data.shape[1] - 1
        self._step_targets = [min(t, (j + 1) * self.window * cfg.data.seg_len) - j * self.window * cfg.data.seg_len
                              for j in range(self.steps_per_epoch)]
        self.epoch_items = cfg.data.batch_size * t
        self.state = None

    def total_steps(self, o: OptimConfig) -> int:
        """Steps of the budget: the first step at which max_tokens targets (or max_epochs epochs)
        have been trained on, counted exactly, short epoch-end steps included."""
        if o.max_steps is not None:
            return o.max_steps
        tokens = o.max_tokens if o.max_tokens is not None else math.ceil(o.max_epochs * self.epoch_items)
        epochs, rest = divmod(tokens, self.epoch_items)
        steps, done = epochs * self.steps_per_epoch, 0
        for n in self._step_targets:
            if done >= rest:
                break
            done += n * self.cfg.data.batch_size
            steps += 1
        return max(steps, 1)

    def tokens_after(self, steps: int) -> int:
        """Targets trained on by the first ``steps`` steps (whole epochs, then part of one)."""
        epochs, rest = divmod(steps, self.steps_per_epoch)
        return epochs * self.epoch_items + sum(self._step_targets[:rest]) * self.cfg.data.batch_size

    def budget_text(self, o: OptimConfig) -> str:
        tokens = self.tokens_after(self.total_steps(o))
        return f"{tokens:,} training tokens, {tokens / self.epoch_items:.2f} epochs"

    def train_loss(self, model: nn.Module, step: int) -> tuple[Tensor, int]:
        first = (step % self.steps_per_epoch) * self.window
        if first == 0:
            self.state = model.init_state(self.n_streams, self.device)
        state = model.detach_state(self.state)
        total, count = 0.0, 0
        for i in range(first, min(first + self.window, len(self.train_stream))):
            x, y = self.train_stream.segment(i)
            hidden, state = model(x, state)
            total = total + model.head.loss(hidden, y) * y.numel()
            count += y.numel()
        # The loss keeps its graph; the carried state need not, as the next step cuts it anyway.
        self.state = model.detach_state(state)
        return total / count, count

    def eval_stream(self, split: str) -> SegmentStream:
        ids = {"valid": self.corpus.valid, "test": self.corpus.test}[split]
        return SegmentStream(batchify(ids, self.cfg.data.eval_batch_size).to(self.device), self.cfg.data.seg_len,
                             max_segments=self.cfg.data.max_eval_segments)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """Token-weighted mean NLL over the whole split (or the profile's cap), state carried."""
        state = model.init_state(self.cfg.data.eval_batch_size, self.device)
        nll, count = 0.0, 0
        for _, x, y in self.eval_stream(split):
            hidden, state = model(x, state)
            nll += model.head.loss(hidden, y).item() * y.numel()
            count += y.numel()
        loss = nll / count
        out = {"loss": loss, "ppl": math.exp(loss), "tokens": count}
        if self.cfg.data.dataset == "memory-reach":
            from crt_repro.memory_reach import recall_metrics

            # The controls (three passes) on the reported split only.
            out |= recall_metrics(model, self.eval_stream(split), self.cfg.data.reach_keys, self.cfg.data.reach_gap,
                                  controls=split == "test")
        return out

    def state_dict(self) -> dict:
        """A collective in data-parallel training: every rank calls it."""
        if self.streams is None:
            return {"state": self.state}
        return {"state": distributed.gather_streams(self.state, distributed.current())}

    def load_state_dict(self, d: dict) -> None:
        state = d["state"]
        if state is not None:
            # Saved by any number of ranks: the state of all B streams, of which this task keeps its own.
            part = slice(None) if self.streams is None else self.streams
            state = state[part].to(self.device) if isinstance(state, Tensor) else [s[part].to(self.device) for s in state]
        self.state = state
