"""What planning and reporting need to know of each corpus without loading it (no torch): its
vocabulary size (it sizes the softmax layer in the cost tables and the plan's estimates) and its
training tokens (with <eos>; ../shared/data/README.md, WikiText-103: its paper's count). The
generated corpora are small enough to count as none."""
from __future__ import annotations

VOCAB_SIZES = {"ptb": 10_000, "wikitext-2": 33_278, "wt103": 267_735}
TRAIN_TOKENS = {"ptb": 929_589, "wikitext-2": 2_088_628, "wt103": 103_227_021}
