"""mCA and top-1 on a hand-built confusion case."""
from __future__ import annotations

import torch

from crt_repro.video.metrics import confusion_matrix, mean_class_accuracy, top1_accuracy

# class 0: 4 clips, 3 right; class 1: 2 clips, 1 right; class 2: 1 clip, 0 right;
# class 3 never a target but predicted once (it must not enter the mean).
TARGETS = torch.tensor([0, 0, 0, 0, 1, 1, 2])
PREDS = torch.tensor([0, 0, 0, 1, 1, 3, 0])


def test_confusion_matrix():
    cm = confusion_matrix(PREDS, TARGETS, 4)
    assert cm.tolist() == [[3, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]]


def test_mca_and_top1():
    assert abs(mean_class_accuracy(PREDS, TARGETS) - (3 / 4 + 1 / 2 + 0) / 3) < 1e-6
    assert abs(top1_accuracy(PREDS, TARGETS) - 4 / 7) < 1e-6
    logits = torch.nn.functional.one_hot(PREDS, 5).float() * 2 - 0.5   # argmax = PREDS
    assert mean_class_accuracy(logits, TARGETS) == mean_class_accuracy(PREDS, TARGETS)
    assert top1_accuracy(logits, TARGETS) == top1_accuracy(PREDS, TARGETS)


def test_mca_weights_classes_not_clips():
    targets = torch.tensor([0] * 9 + [1])
    preds = torch.zeros(10, dtype=torch.long)       # always the majority class
    assert abs(top1_accuracy(preds, targets) - 0.9) < 1e-6
    assert abs(mean_class_accuracy(preds, targets) - 0.5) < 1e-6
