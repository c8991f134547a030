"""Video classification data and tools: Toyota Smarthome clips (cross-subject protocol), a
synthetic moving-square set in the same layout, PyAV decoding, TimeSformer checkpoint loading,
and the mCA / top-1 metrics. The models are in `crt_repro.models.vit`."""
from crt_repro.video.checkpoint import CheckpointMismatch, load_backbone, load_timesformer_k400
from crt_repro.video.metrics import confusion_matrix, mean_class_accuracy, top1_accuracy
from crt_repro.video.smarthome import (CS_TRAIN_SUBJECTS, SMARTHOME_CLASSES, SmarthomeClips,
                                       find_clips, split_clips)
from crt_repro.video.synthetic import SYNTHETIC_CLASSES, make_synthetic_videos

__all__ = [
    "CS_TRAIN_SUBJECTS", "SMARTHOME_CLASSES", "SYNTHETIC_CLASSES", "CheckpointMismatch",
    "SmarthomeClips", "confusion_matrix", "find_clips", "load_backbone", "load_timesformer_k400",
    "make_synthetic_videos", "mean_class_accuracy", "split_clips", "top1_accuracy",
]
