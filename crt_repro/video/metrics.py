"""Classification metrics for the video tables.

Toyota Smarthome's metric is mean class accuracy (mCA; Das et al. 2019, the paper's Tables 7
and 13): the recall of each class, averaged over classes with equal weight, which counters the
data set's strong class imbalance. Classes absent from the targets have no recall and are left
out of the mean (a CS test set may lack a class). Top-1 is the plain fraction correct.
"""
from __future__ import annotations

import torch


def _as_labels(preds: torch.Tensor) -> torch.Tensor:
    """Logits/scores [N, C] -> argmax labels [N]; labels [N] pass through."""
    return preds.argmax(dim=-1) if preds.dim() == 2 else preds


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, n_classes: int) -> torch.Tensor:
    """[n_classes, n_classes] counts, rows = true class, columns = predicted class."""
    idx = targets.long() * n_classes + _as_labels(preds).long()
    return torch.bincount(idx, minlength=n_classes * n_classes).view(n_classes, n_classes)


def mean_class_accuracy(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over classes present in `targets` of per-class recall; preds are labels or logits."""
    preds = _as_labels(preds)
    n_classes = int(max(preds.max(), targets.max())) + 1
    cm = confusion_matrix(preds, targets, n_classes)
    support = cm.sum(dim=1)
    present = support > 0
    return float((cm.diagonal()[present] / support[present]).mean())


def top1_accuracy(preds: torch.Tensor, targets: torch.Tensor) -> float:
    return float((_as_labels(preds) == targets).float().mean())
