"""Predict for the families beyond supervised: load the checkpoint's networks, run an operation."""

from __future__ import annotations

from typing import Any

import torch

from models.checkpoint import split_prefix
from models.checkpoint_meta import CheckpointMeta, ModelMeta
from models.errors import PredictError
from models.families import OPERATION_NAMES, FamilyModel, OperationRequest, family_module


class FamilyPredictor:
    def __init__(self, model: FamilyModel) -> None:
        self.model = model
        self.operations = family_module(model.spec.family).OPERATIONS

    @classmethod
    def from_checkpoint(
        cls, tensors: dict[str, torch.Tensor], meta: CheckpointMeta, device: torch.device
    ) -> FamilyPredictor:
        module = family_module(meta.spec.family).build(meta.spec, meta.info)
        module.load_state_dict(split_prefix(tensors, "model."), strict=True)
        module.to(device).eval()
        family = meta.family if isinstance(meta, ModelMeta) else {}  # an epoch's checkpoint serves too, undescribed
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
