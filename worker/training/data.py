"""What the engine trains on, and the error that ends training with a reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from core.spec import DataInfo


class TrainingFailed(RuntimeError):
    """Training cannot go on; the message is the reason a user reads."""


class RankFailed(RuntimeError):
    """A data-parallel rank died (a signal, the OOM killer) or lost the others: no fault of the
    job's. The attempt ends and the job resumes from its last checkpoint, as after a killed
    training process; it is no TrainingFailed on purpose, since that fails the job for good."""


@dataclass
class TrainData:
    """Preprocessed tensors; `y` holds class ids (int64) or targets (float32, N x k)."""

    info: DataInfo
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None
