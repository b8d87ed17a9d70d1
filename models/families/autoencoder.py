"""Autoencoder: an encoder (input -> code) and a decoder (code -> the input's shape), trained
to reconstruct its input with `compile.loss`; the VAE family reuses the pieces defined here.

The decoder's output activation is kept apart from its body (as `models.network.Network`
does for a classifier), and moved past trailing reshape/flatten layers, so binary
cross-entropy trains on logits: numerically stable, never a sigmoid inside the loss.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.spec import AutoencoderJob, DataInfo, JobSpec, as_family
from models.errors import PredictError, SpecError
from models.families import FamilyModel, Operation, OperationRequest, refuse_unused
from models.inference import prepare_instances, raw_units
from models.layers import activation_module
from models.network import LayerSummary, Network, build_layers
from models.registry import Shape
from models.validation import FLOAT_BYTES, DryRun, optimizer_slots

RECONSTRUCTION_LOSSES = ("mse", "mae", "huber", "binary_crossentropy")
_SHAPE_ONLY = ("reshape", "flatten")  # an elementwise activation commutes with these
_PASS_THROUGH = ("dropout", "reshape", "flatten")


class Decoder(nn.Module):
    """`body` yields the logits; `output` applies the output activation (a sigmoid for binary
    cross-entropy, whose loss reads the logits)."""

    def __init__(
        self,
        body: nn.Sequential,
        head_name: str,
        head_alpha: float | None,
        output_shape: Shape,
        logits_loss: bool,
    ) -> None:
        super().__init__()
        self.body = body
        self.head = activation_module(head_name, head_alpha)
        self.head_name = head_name
        self.output_shape = output_shape
        self.logits_loss = logits_loss

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)

    def output(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.logits_loss else self.head(logits)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.output(self.body(z))


class Autoencoder(nn.Module):
    def __init__(self, encoder: Network, decoder: Decoder) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def build_part(
    layers: list[Any], input_shape: Shape, initializer: str, family: str, part: str
) -> tuple[nn.Sequential, Shape, list[LayerSummary]]:
    """`build_layers`, with its errors pointing at `<family>.<part>[index]` instead of `model.layers`."""
    try:
        return build_layers(layers, input_shape, initializer)
    except SpecError as exc:
        raise SpecError(f"{family}.{part}: {exc.message}", (family, part, *exc.loc[2:])) from exc


def build_encoder(
    layers: list[Any], info: DataInfo, initializer: str, family: str
) -> tuple[Network, list[Any]]:
    if (
        layers[0].type == "embedding"
    ):  # the data reach these families as feature values, never token ids
        raise SpecError(
            f"{family}.encoder: layer 0 (embedding): a {family} reconstructs feature values, not token "
            "ids; start with the layers that read the features",
            (family, "encoder", 0),
        )
    body, shape, summary = build_part(layers, info.input_shape, initializer, family, "encoder")
    last = layers[-1]
    network = Network(
        body,
        getattr(last, "activation", "linear"),
        getattr(last, "alpha", None),
        info.input_shape,
        shape,
        tokens=False,
    )
    return network, summary


def _output_activation(layers: list[Any]) -> tuple[list[Any], str, float | None]:
    """(layers to build, the output activation, its alpha): an elementwise activation followed
    only by reshape/flatten layers becomes the output activation, so `logits` are pre-activation."""
    index = len(layers) - 1
    while index > 0 and layers[index].type in _SHAPE_ONLY:
        index -= 1
    layer = layers[index]
    name, alpha = getattr(layer, "activation", "linear"), getattr(layer, "alpha", None)
    if index == len(layers) - 1 or name in ("linear", "softmax"):
        return (
            layers,
            getattr(layers[-1], "activation", "linear"),
            getattr(layers[-1], "alpha", None),
        )
    moved = layer.model_copy(update={"activation": "linear"})
    return [*layers[:index], moved, *layers[index + 1 :]], name, alpha


def build_decoder(
    layers: list[Any], code_shape: Shape, info: DataInfo, spec: JobSpec, initializer: str
) -> tuple[Decoder, list[LayerSummary]]:
    family, loss = spec.family, spec.compiled.loss
    built_layers, head, alpha = _output_activation(layers)
    body, shape, summary = build_part(built_layers, code_shape, initializer, family, "decoder")
    last = len(layers) - 1
    where = (family, "decoder", last)
    if shape != info.input_shape:
        # Refused as Keras would: a silent reshape would hide a wrong architecture.
        hint = (
            f'; end with {{"type": "reshape", "target_shape": {list(info.input_shape)}}}'
            if math.prod(shape) == math.prod(info.input_shape)
            else ""
        )
        raise SpecError(
            f"{family}.decoder: layer {last} ({layers[-1].type}): output shape {shape} differs from "
            f"the input shape {info.input_shape}{hint}",
            where,
        )
    if loss == "binary_crossentropy":
        if head not in ("sigmoid", "linear"):
            raise SpecError(
                f"{family}.decoder: layer {last} ({layers[-1].type}): binary_crossentropy needs the "
                f"output activation to be sigmoid (or linear logits), not {head}",
                where,
            )
        if head == "linear":
            _refuse_hidden_activation(layers, family)
    return Decoder(body, head, alpha, shape, loss == "binary_crossentropy"), summary


def _refuse_hidden_activation(layers: list[Any], family: str) -> None:
    """A sigmoid/softmax followed only by pass-through layers would reach the loss as 'logits'."""
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        activation = getattr(layer, "activation", "linear")
        if activation in ("softmax", "sigmoid"):
            raise SpecError(
                f"{family}.decoder: layer {index} ({layer.type}): its {activation} output reaches "
                f"binary_crossentropy through layers that do not change it; put the sigmoid on the "
                f"decoder's last layer",
                (family, "decoder", index),
            )
        if layer.type not in _PASS_THROUGH and not (
            layer.type == "activation" and activation == "linear"
        ):
            return


def check_compile(spec: JobSpec, info: DataInfo) -> None:
    c = spec.compiled
    if c.loss not in RECONSTRUCTION_LOSSES:
        raise SpecError(
            f"{c.loss} is not a reconstruction loss; choose one of {list(RECONSTRUCTION_LOSSES)}",
            ("compile", "loss"),
        )
    binarized = (
        getattr(spec.dataset, "binarize", None) is not None
    )  # 0/1 features, standardised only on request
    default_standardized = info.kind == "tabular" and not binarized
    standardized = spec.dataset.standardize is True or (
        spec.dataset.standardize is None and default_standardized
    )
    if c.loss == "binary_crossentropy" and standardized:
        raise SpecError(
            "binary_crossentropy compares reconstructions with inputs in [0, 1], but this dataset's "
            "features are standardised; use mse, or set dataset.standardize to false for features "
            "in [0, 1]",
            ("compile", "loss"),
        )
    if "accuracy" in c.metrics:
        raise SpecError(
            "accuracy needs class labels; a reconstruction reports mae or mse",
            ("compile", "metrics"),
        )


def reconstruction_terms(
    loss: str, decoder: Decoder, logits: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """The loss of every value of every sample (no reduction)."""
    if loss == "binary_crossentropy":
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    out = decoder.head(logits)
    if loss == "mse":
        return (out - target).square()
    if loss == "mae":
        return (out - target).abs()
    return F.huber_loss(out, target, reduction="none")


def build(spec: JobSpec, info: DataInfo) -> Autoencoder:
    return build_summarised(spec, info)[0]


def build_summarised(
    spec: JobSpec, info: DataInfo
) -> tuple[Autoencoder, dict[str, list[LayerSummary]]]:
    section = as_family(spec, AutoencoderJob).autoencoder
    check_compile(spec, info)
    encoder, enc_summary = build_encoder(
        list(section.encoder), info, section.initializer, "autoencoder"
    )
    decoder, dec_summary = build_decoder(
        list(section.decoder), encoder.output_shape, info, spec, section.initializer
    )
    return Autoencoder(encoder, decoder), {"encoder": enc_summary, "decoder": dec_summary}


# -- the dry run ----------------------------------------------------------------------------------
def forward_by_layer(
    body: nn.Sequential, x: torch.Tensor, family: str, part: str, layers: list[Any]
) -> torch.Tensor:
    """Run layer by layer so a runtime failure still names its list and index."""
    for index, module in enumerate(body):
        try:
            x = module(x)
        except RuntimeError as exc:
            raise SpecError(
                f"{family}.{part}: layer {index} ({layers[index].type}): {exc}",
                (family, part, index),
            ) from exc
    return x


def report(
    spec: JobSpec, info: DataInfo, module: nn.Module, summaries: dict[str, list[LayerSummary]]
) -> DryRun:
    parameters = sum(p.numel() for p in module.parameters())
    per_sample = math.prod(info.input_shape) + sum(
        math.prod(s.output_shape) for ss in summaries.values() for s in ss
    )
    memory = parameters * FLOAT_BYTES * (2 + optimizer_slots(spec.compiled.optimizer))
    memory += 2 * per_sample * spec.fit.batch_size * FLOAT_BYTES
    layers = [
        {
            "network": part,
            "index": s.index,
            "type": s.type,
            "output_shape": list(s.output_shape),
            "parameters": s.parameters,
        }
        for part, ss in summaries.items()
        for s in ss
    ]
    return DryRun(parameters, info.input_shape, layers, int(memory))


def dry_run(spec: JobSpec, info: DataInfo) -> DryRun:
    module, summaries = build_summarised(spec, info)
    section = as_family(spec, AutoencoderJob).autoencoder
    x = torch.rand(2, *info.input_shape)  # in [0, 1]: a valid binary cross-entropy target
    module.train()
    code = module.encoder.head(
        forward_by_layer(module.encoder.body, x, "autoencoder", "encoder", section.encoder)
    )
    logits = forward_by_layer(module.decoder.body, code, "autoencoder", "decoder", section.decoder)
    reconstruction_terms(spec.compiled.loss, module.decoder, logits, x).mean().backward()
    return report(spec, info, module, summaries)


# -- predict ---------------------------------------------------------------------------------------
def model_inputs(model: FamilyModel, req: OperationRequest, operation: str) -> torch.Tensor:
    """Raw instances -> the model's input tensor, with the saved preprocessing."""
    refuse_unused(req, operation, ("instances",))
    if req.instances is None:
        raise PredictError(
            f"give `instances` (raw samples of shape {list(model.info.input_shape)}) to {operation}"
        )
    return prepare_instances(
        req.instances, model.info.input_shape, model.meta.preprocessing, False, model.device
    )


def code_inputs(model: FamilyModel, req: OperationRequest, shape: Shape) -> torch.Tensor:
    """Code (latent) vectors as given: they are model-space values, never rescaled."""
    refuse_unused(req, "decode", ("instances",))
    if req.instances is None:
        raise PredictError(f"give `instances`: code vectors of shape {list(shape)} to decode")
    return prepare_instances(req.instances, shape, {}, False, model.device)


def in_raw_units(model: FamilyModel, x: torch.Tensor) -> list[Any]:
    return raw_units(x, model.meta.preprocessing)


def _reconstruct(model: FamilyModel, req: OperationRequest) -> dict[str, Any]:
    module: Autoencoder = model.module  # type: ignore[assignment]
    return {"predictions": in_raw_units(model, module(model_inputs(model, req, "reconstruct")))}


def _encode(model: FamilyModel, req: OperationRequest) -> dict[str, Any]:
    module: Autoencoder = model.module  # type: ignore[assignment]
    return {
        "predictions": module.encoder(model_inputs(model, req, "encode")).float().cpu().tolist()
    }


def _decode(model: FamilyModel, req: OperationRequest) -> dict[str, Any]:
    module: Autoencoder = model.module  # type: ignore[assignment]
    return {
        "predictions": in_raw_units(
            model, module.decoder(code_inputs(model, req, module.encoder.output_shape))
        )
    }


OPERATIONS: dict[str, Operation] = {
    "reconstruct": _reconstruct,
    "encode": _encode,
    "decode": _decode,
}
