"""Run infrastructure shared by every training job: checkpoints, metrics, progress, configs."""

from irl.utils.checkpoint import CheckpointMismatchError, Checkpointer
from irl.utils.config_utils import (
    ConfigError,
    check,
    check_choice,
    check_int,
    check_range,
    config_fingerprint,
    save_config,
    select_preset,
)
from irl.utils.metrics import MetricsWriter, read_jsonl
from irl.utils.progress import Progress

__all__ = [
    'CheckpointMismatchError',
    'Checkpointer',
    'ConfigError',
    'MetricsWriter',
    'Progress',
    'check',
    'check_choice',
    'check_int',
    'check_range',
    'config_fingerprint',
    'read_jsonl',
    'save_config',
    'select_preset',
]
