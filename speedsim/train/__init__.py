"""Training recipes: pre-train and fine-tune SPEED models on the code corpus; record exit traces.

Layer 6: uses `data`, `model`, `decode` and `trace`; nothing below imports it.
"""

from speedsim.train.batches import corpus_of, prepare_data, pretraining_streams
from speedsim.train.checkpoint import load_model, read_checkpoint, stage_path
from speedsim.train.config import TrainConfig, load_train_config, parse_train_config, speed_config
from speedsim.train.evaluate import exit_losses, rouge_l
from speedsim.train.loop import lr_at, train
from speedsim.train.record import (
    exit_trace,
    record_draft_traces,
    record_traces,
    sample_indices,
    trace_metrics,
    trace_of,
)

__all__ = [
    "TrainConfig",
    "corpus_of",
    "exit_losses",
    "exit_trace",
    "load_model",
    "load_train_config",
    "lr_at",
    "parse_train_config",
    "prepare_data",
    "pretraining_streams",
    "read_checkpoint",
    "record_draft_traces",
    "record_traces",
    "rouge_l",
    "sample_indices",
    "speed_config",
    "stage_path",
    "trace_metrics",
    "trace_of",
    "train",
]
