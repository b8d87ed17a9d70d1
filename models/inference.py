"""Inference from a checkpoint: rebuild the module from its spec, load safetensors weights,
apply the saved preprocessing, and return classes with probabilities, or values."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.checkpoint import read_checkpoint, split_prefix
from models.checkpoint_meta import Affine, CheckpointMeta, Preprocessing
from models.errors import PredictError
from models.families import OperationRequest
from models.families.predictor import FamilyPredictor
from models.network import Network, build_network


def affine(a: np.ndarray, affine: Affine | None, invert: bool = False) -> np.ndarray:
    if not affine:
        return a
    offset, scale = np.asarray(affine["offset"], np.float32), np.asarray(affine["scale"], np.float32)
    return a / scale + offset if invert else (a - offset) * scale


def prepare_instances(
    instances: Any, shape: tuple[int, ...], preprocessing: Preprocessing, tokens: bool, device: torch.device
) -> torch.Tensor:
    """Raw instances -> the model's input tensor: shape checked, the saved preprocessing applied."""
    try:
        a = np.asarray(instances, dtype=np.float64)
    except (ValueError, TypeError, OverflowError) as exc:
        raise PredictError(f"instances must be numbers in a regular nested list: {exc}") from exc
    want = f"each instance must have shape {list(shape)} ({math.prod(shape)} values)"
    if a.ndim < 1 or len(a) == 0:
        raise PredictError(f"give a non-empty list of instances; {want}")
    if tuple(a.shape[1:]) != shape:
        if a.ndim == 2 and a.shape[1] == math.prod(shape):
            a = a.reshape(len(a), *shape)  # flat instances are accepted too
        else:
            raise PredictError(f"{want}; received instances of shape {list(a.shape[1:])}")
    if not np.all(np.isfinite(a)):
        raise PredictError("instances must hold finite numbers")
    if tokens:
        return torch.from_numpy(a.astype(np.int64)).to(device)
    if (threshold := preprocessing.get("binarize")) is not None:  # dataset.binarize, as in training
        a = (a > threshold).astype(np.float64)
    x = affine(a.astype(np.float32), preprocessing.get("features"))
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)


def raw_units(x: torch.Tensor, preprocessing: Preprocessing) -> list[Any]:
    """Model-space features (reconstructions, samples) back in the dataset's raw units."""
    out: list[Any] = affine(x.float().cpu().numpy(), preprocessing.get("features"), invert=True).tolist()
    return out


class Predictor:
    family = "supervised"

    def __init__(self, network: Network, meta: CheckpointMeta, device: torch.device) -> None:
        self.network = network.eval()
        self.spec, self.info, self.meta, self.device = meta.spec, meta.info, meta, device
        self.preprocessing = meta.preprocessing
        self.class_names = meta.class_names
        self.loss = meta.spec.compiled.loss

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> Loaded:
        """`path` is a checkpoint's JSON file, or a job directory holding `model.json`."""
        meta_path = path / "model.json" if path.is_dir() else path
        tensors, meta = read_checkpoint(meta_path)  # an epoch's or best's serves too, as before
        if meta.spec.family != "supervised":
            return FamilyPredictor.from_checkpoint(tensors, meta, torch.device(device))
        network = build_network(meta.spec, meta.info).network
        network.load_state_dict(split_prefix(tensors, "model."), strict=True)
        return cls(network.to(device), meta, torch.device(device))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.network.state_dict().values())

    def _inputs(self, instances: Any) -> torch.Tensor:
        return prepare_instances(instances, self.info.input_shape, self.preprocessing, self.network.tokens, self.device)

    def run(self, operation: str | None, request: OperationRequest) -> dict[str, Any]:
        """The predict endpoint's entry, shared with the other families' predictors."""
        if operation not in (None, "predict"):
            raise PredictError(
                f"operation {operation!r} is not available to the supervised family; use 'predict'", "operation"
            )
        if request.instances is None:
            raise PredictError("give `instances` to predict")
        return self.predict(request.instances)

    @torch.inference_mode()
    def predict(self, instances: Any) -> dict[str, Any]:
        x = self._inputs(instances)
        vocabulary = self.network.vocabulary
        if vocabulary is not None and (x.min() < 0 or x.max() >= vocabulary):
            raise PredictError(f"token ids must lie in 0..{vocabulary - 1}")
        logits = self.network.logits(x).float()
        if self.info.task == "classification":
            return self._classes(logits)
        values = affine(self.network.head(logits).cpu().numpy(), self.preprocessing.get("target"), invert=True)
        out = values[:, 0] if values.shape[1] == 1 else values
        return {"predictions": out.tolist()}

    def _classes(self, logits: torch.Tensor) -> dict[str, Any]:
        if logits.shape[1] == 1:
            p = torch.sigmoid(logits)
            probs = torch.cat([1 - p, p], dim=1)
        elif self.loss == "binary_crossentropy":
            probs = torch.sigmoid(logits)
        elif self.loss in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
            probs = F.softmax(logits, dim=1)
        else:  # a regression loss on one-hot targets: the head's output is the score
            probs = self.network.head(logits)
        ids = probs.argmax(dim=1).tolist()
        names = self.class_names or [str(i) for i in range(probs.shape[1])]
        return {
            "predictions": [names[i] for i in ids],
            "class_ids": ids,
            "probabilities": probs.cpu().tolist(),
            "classes": names,
        }


Loaded = Predictor | FamilyPredictor
__all__ = ["Loaded", "PredictError", "Predictor", "prepare_instances", "raw_units"]
