"""Predict for every family: load a checkpoint's networks, run one of the family's operations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from models.checkpoint import read_checkpoint, split_prefix
from models.checkpoint_meta import CheckpointMeta, ModelMeta
from models.errors import PredictError
from models.families import OPERATION_NAMES, FamilyModel, OperationRequest, family_module


class Predictor:
    """A loaded checkpoint and its family's operations (the registry's `operations`)."""

    def __init__(self, model: FamilyModel) -> None:
        self.model = model
        self.operations = family_module(model.spec.family).OPERATIONS

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> Predictor:
        """`path` is a checkpoint's JSON file, or a job directory holding `model.json`."""
        meta_path = path / "model.json" if path.is_dir() else path
        tensors, meta = read_checkpoint(meta_path)  # an epoch's or best's serves too
        return cls.from_checkpoint(tensors, meta, torch.device(device))

    @classmethod
    def from_checkpoint(
        cls, tensors: dict[str, torch.Tensor], meta: CheckpointMeta, device: torch.device
    ) -> Predictor:
        module = family_module(meta.spec.family).build(meta.spec, meta.info)
        module.load_state_dict(split_prefix(tensors, "model."), strict=True)
        module.to(device).eval()
        family = (
            meta.family if isinstance(meta, ModelMeta) else {}
        )  # an epoch's checkpoint serves too, undescribed
        return cls(FamilyModel(module, meta.spec, meta.info, meta, device, family))

    @property
    def family(self) -> str:
        return self.model.spec.family

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.model.module.state_dict().values())

    @torch.inference_mode()
    def run(self, operation: str | None, request: OperationRequest) -> dict[str, Any]:
        family = self.model.spec.family
        allowed = OPERATION_NAMES[family]
        name = operation or allowed[0]
        if name not in allowed:
            raise PredictError(
                f"operation {name!r} is not available to the {family} family; choose one of {list(allowed)}",
                "operation",
            )
        return self.operations[name](self.model, request)

    def predict(self, instances: Any) -> dict[str, Any]:
        """`predict` on `instances`: the supervised, DBN and seq2seq families' operation."""
        return self.run("predict", OperationRequest(instances=instances))
