"""What each family's operations take and give as Open Inference Protocol tensors.

Every operation that reads samples takes one input, `instances` (the /v1 body's `instances`: raw
feature values, or code vectors for decode; token ids for seq2seq), batched on the first dimension.
A conditional GAN's operations also take `labels` (INT64 [-1]). `count` and `seed` (generate,
sample) are request parameters, as is `operation`. Outputs are named as /v1 predict's answer
fields: `predictions`, `class_ids`, `probabilities`, `log_variances`; `classes` (the class names,
the same for every request) is not an output: a classifier's `predictions` are those names (BYTES).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.families import OPERATION_NAMES, dbn, rbm
from models.inference import Predictor

BATCH = -1  # a variable dimension, as the protocol writes it


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class OperationIO:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: tuple[str, ...] = ()  # request parameters the operation reads


def _classifier(classes: int) -> tuple[TensorSpec, ...]:
    return (
        TensorSpec("predictions", "BYTES", (BATCH,)),
        TensorSpec("class_ids", "INT64", (BATCH,)),
        TensorSpec("probabilities", "FP32", (BATCH, classes)),
    )


def _features(name: str, shape: tuple[int, ...]) -> TensorSpec:
    return TensorSpec(name, "FP32", (BATCH, *shape))


def describe(predictor: Predictor, operation: str) -> OperationIO:
    """The inputs, outputs and parameters of one of the model's operations."""
    model, family = predictor.model, predictor.family
    info, spec, module = model.info, model.spec, model.module
    sample = info.input_shape
    instances = _features("instances", sample)
    classes = len(model.meta.class_names or ()) or info.num_classes or BATCH
    if family == "supervised":
        if getattr(module, "tokens", False):
            instances = TensorSpec("instances", "INT64", (BATCH, *sample))
        if info.task == "classification":
            return OperationIO((instances,), _classifier(classes))
        target = () if info.target_dim == 1 else (info.target_dim,)
        return OperationIO((instances,), (_features("predictions", target),))
    if family in ("autoencoder", "vae"):
        code = (
            tuple(module.encoder.output_shape)  # type: ignore[union-attr, arg-type]
            if family == "autoencoder"
            else (int(module.latent_dim),)  # type: ignore[arg-type]
        )
        restored = (_features("predictions", sample),)
        if operation == "encode":
            encoded: tuple[TensorSpec, ...] = (_features("predictions", code),)
            if family == "vae":
                encoded += (_features("log_variances", code),)
            return OperationIO((instances,), encoded)
        if operation == "decode":
            return OperationIO((_features("instances", code),), restored)
        if operation == "sample":
            return OperationIO((), restored, ("count", "seed"))
        return OperationIO((instances,), restored)
    if family == "gan":
        labels = (
            (TensorSpec("labels", "INT64", (BATCH,)),) if module.num_classes is not None else ()
        )
        if operation == "generate":
            outputs: tuple[TensorSpec, ...] = (_features("predictions", sample),)
            if labels:
                outputs += (TensorSpec("class_ids", "INT64", (BATCH,)),)
            return OperationIO(labels, outputs, ("count", "seed"))
        return OperationIO((instances, *labels), (_features("predictions", ()),))
    if family == "rbm":
        if operation == "transform":
            hidden = rbm.section(spec).hidden_units
            return OperationIO((instances,), (_features("predictions", (hidden,)),))
        return OperationIO((instances,), (_features("predictions", sample),))
    if family == "dbn":
        if operation == "transform":
            top = dbn.section(spec).hidden_units[-1]
            return OperationIO((instances,), (_features("predictions", (top,)),))
        return OperationIO((instances,), _classifier(classes))
    if family == "seq2seq":
        tokens = TensorSpec("instances", "INT64", (BATCH, *sample))
        return OperationIO((tokens,), (TensorSpec("predictions", "INT64", (BATCH, BATCH)),))
    raise AssertionError(f"no protocol description of the {family} family")


def operations(predictor: Predictor) -> tuple[str, ...]:
    """The model's operations; the first is the default."""
    return OPERATION_NAMES[predictor.family]


def metadata(name: str, version: int | None, predictor: Predictor) -> dict[str, Any]:
    """The model metadata response: the default operation's inputs and outputs."""
    default = operations(predictor)[0]
    io = describe(predictor, default)
    answer: dict[str, Any] = {"name": name}
    if version is not None:
        answer["versions"] = [str(version)]
    answer |= {
        "platform": "pytorch",
        "inputs": [t.describe() for t in io.inputs],
        "outputs": [t.describe() for t in io.outputs],
    }
    return answer
