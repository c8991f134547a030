"""A corpus as token ids, and its vocabulary numbered by frequency.

Ids follow Transformer-XL's numbering: the most frequent training word is id 0, then down the
counts (ties in order of first appearance in train), so that an adaptive softmax's frequency
clusters are contiguous id ranges and never force committed runs to be renumbered.

Two details, both fixed by the runs already made: ``<eos>`` is ranked by its count like any word
(PTB: id 2, after "the" and ``<unk>``; WikiText-2: id 8), where Transformer-XL adds it as a
special symbol ahead of the counts (id 0); and in ties ``<eos>`` comes first, because the
tokeniser numbers it before it reads a line.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

EOS = "<eos>"
UNK = "<unk>"
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True, eq=False)  # eq on tensors would return tensors, not bools
class Corpus:
    name: str
    vocab: list[str]
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def frequency_sorted(corpus: Corpus) -> Corpus:
    """The same corpus with ids renumbered by descending training frequency; equally frequent
    words (words absent from train included) keep their order of the input ids."""
    counts = torch.bincount(corpus.train, minlength=corpus.vocab_size)
    # Stable sort on -count keeps first-appearance order among equally frequent words.
    order = torch.sort(-counts, stable=True).indices
    new_id = torch.empty_like(order)
    new_id[order] = torch.arange(len(order))
    return Corpus(corpus.name, [corpus.vocab[i] for i in order.tolist()],
                  *(new_id[getattr(corpus, s)] for s in SPLITS))
