"""GANs: a generator (a latent vector -> a sample of the dataset's shape) and a discriminator
(a sample -> one score, a logit; wgan_gp's critic gives an unbounded score).

A conditional GAN (`cgan`) feeds the class label to both networks as a one-hot: the generator
takes `[latent, one_hot]` (latent_dim + K values); the discriminator takes the sample with the
one-hot appended on the sample's first (channel) axis, broadcast over the other axes: a tabular
sample (F,) becomes (F + K,), an image (C, H, W) becomes (C + K, H, W). One rule that serves dense
and conv discriminators alike; an MLP discriminator on images sees K constant planes it flattens.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from core.spec import DataInfo, GANJob, JobSpec, as_family
from core.spec.families import GANNetwork, GANSpec
from models.errors import PredictError, SpecError
from models.families import FamilyModel, Operation, OperationRequest
from models.inference import prepare_instances, raw_units
from models.network import LayerSummary, Network, build_layers
from models.validation import FLOAT_BYTES, DryRun, optimizer_slots

DEFAULT_COUNT = 8
# The discriminator's logit is trained with a cross-entropy: a sigmoid head is what a Keras user
# writes and means the same; anything else would be silently dropped, so it is refused.
LOGIT_HEADS = {
    "gan": ("linear", "sigmoid"),
    "dcgan": ("linear", "sigmoid"),
    "cgan": ("linear", "sigmoid"),
    "wgan_gp": ("linear",),
}


class GAN(nn.Module):
    """Both networks; `generate` returns model-space samples, `score` one logit per sample."""

    def __init__(
        self,
        generator: Network,
        discriminator: Network,
        variant: str,
        latent_dim: int,
        num_classes: int | None,
    ) -> None:
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.variant = variant
        self.latent_dim = latent_dim
        self.num_classes = num_classes  # set for a conditional GAN only

    def noise(self, n: int, seed: int | None = None) -> torch.Tensor:
        """Latent vectors: from the global RNG in training, from a seeded CPU generator for fixed draws
        (the same vectors on every device)."""
        device = next(self.parameters()).device
        if seed is None:
            return torch.randn(n, self.latent_dim, device=device)
        return torch.randn(n, self.latent_dim, generator=torch.Generator().manual_seed(seed)).to(
            device
        )

    def condition(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """A cgan's network input: the one-hot label appended on axis 1, broadcast over the axes after it."""
        if self.num_classes is None:
            return x
        if labels is None:
            raise ValueError("a conditional GAN needs one label per sample")
        hot = F.one_hot(labels.long(), self.num_classes).to(x.dtype)
        hot = hot.reshape(*hot.shape, *[1] * (x.dim() - 2)).expand(-1, -1, *x.shape[2:])
        return torch.cat([x, hot], dim=1)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        out: torch.Tensor = self.generator(self.condition(z, labels))
        return out

    def score(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.discriminator.logits(self.condition(x, labels)).reshape(len(x))


def section(spec: JobSpec) -> GANSpec:
    return as_family(spec, GANJob).gan


def _network(
    net: GANNetwork, shape: tuple[int, ...], which: str
) -> tuple[Network, list[LayerSummary]]:
    """build_layers, with its errors pointed at `gan.<which>.layers[i]`."""
    for index, layer in enumerate(net.layers):
        if layer.type == "embedding":
            raise SpecError(
                f"gan.{which}: layer {index} (embedding): a GAN's networks take real values, not token ids",
                ("gan", which, "layers", index),
            )
    try:
        body, out_shape, summary = build_layers(list(net.layers), shape, net.initializer)
    except SpecError as exc:
        raise SpecError(f"gan.{which}: {exc.message}", ("gan", which, *exc.loc[1:])) from exc
    last = net.layers[-1]
    head = getattr(last, "activation", "linear")
    return Network(
        body, head, getattr(last, "alpha", None), shape, out_shape, tokens=False
    ), summary


def discriminator_input(info: DataInfo, num_classes: int | None) -> tuple[int, ...]:
    if num_classes is None:
        return info.input_shape
    return (info.input_shape[0] + num_classes, *info.input_shape[1:])


def conditional_classes(g: GANSpec, info: DataInfo) -> int | None:
    if g.variant != "cgan":
        return None
    if info.task != "classification" or not info.num_classes:
        raise SpecError(
            "gan.variant: cgan conditions on class labels and needs a classification dataset; "
            "this one is a regression dataset",
            ("gan", "variant"),
        )
    return info.num_classes


def _built(spec: JobSpec, info: DataInfo) -> tuple[GAN, list[LayerSummary], list[LayerSummary]]:
    g = section(spec)
    classes = conditional_classes(g, info)
    generator, g_summary = _network(g.generator, (g.latent_dim + (classes or 0),), "generator")
    last_g = len(g.generator.layers) - 1
    if generator.output_shape != info.input_shape:
        raise SpecError(
            f"gan.generator: output shape {generator.output_shape} does not fit the discriminator's "
            f"input {info.input_shape} (the dataset's sample shape)",
            ("gan", "generator", "layers", last_g),
        )
    discriminator, d_summary = _network(
        g.discriminator, discriminator_input(info, classes), "discriminator"
    )
    last_d = len(g.discriminator.layers) - 1
    where = ("gan", "discriminator", "layers", last_d)
    if math.prod(discriminator.output_shape) != 1:
        raise SpecError(
            f"gan.discriminator: outputs {discriminator.output_shape} per sample; it must output one "
            "score per sample (end with a dense layer of 1 unit)",
            where,
        )
    if discriminator.head_name not in LOGIT_HEADS[g.variant]:
        raise SpecError(
            f"gan.discriminator: layer {last_d} ({g.discriminator.layers[-1].type}): {g.variant} takes "
            f"the last activation {' or '.join(map(repr, LOGIT_HEADS[g.variant]))}, not "
            f"{discriminator.head_name!r}"
            + (" (a Wasserstein critic's score is unbounded)" if g.variant == "wgan_gp" else ""),
            where,
        )
    return GAN(generator, discriminator, g.variant, g.latent_dim, classes), g_summary, d_summary


def build(spec: JobSpec, info: DataInfo) -> GAN:
    return _built(spec, info)[0]


def _forward(network: Network, x: torch.Tensor, which: str, layers: list[Any]) -> torch.Tensor:
    """Layer by layer, so a runtime failure still names its network and layer."""
    for index, module in enumerate(network.body):
        try:
            x = module(x)
        except RuntimeError as exc:
            raise SpecError(
                f"gan.{which}: layer {index} ({layers[index].type}): {exc}",
                ("gan", which, "layers", index),
            ) from exc
    if tuple(x.shape[1:]) != network.output_shape:  # the builders' shape formulas disagree
        raise SpecError(
            f"gan.{which}: inferred output {network.output_shape}, computed {tuple(x.shape[1:])}",
            ("gan", which, "layers"),
        )
    return network.head(x)


def dry_run(spec: JobSpec, info: DataInfo) -> DryRun:
    """Build both networks, push two samples through generator and discriminator, and backpropagate."""
    g = section(spec)
    gan, g_summary, d_summary = _built(spec, info)
    gan.train()
    labels = torch.arange(2) % (gan.num_classes or 1)
    fake = _forward(
        gan.generator,
        gan.condition(gan.noise(2, seed=0), labels),
        "generator",
        list(g.generator.layers),
    )
    x = gan.condition(fake, labels)
    _forward(gan.discriminator, x, "discriminator", list(g.discriminator.layers)).sum().backward()
    rows = [
        {
            "network": which,
            "index": s.index,
            "type": s.type,
            "output_shape": list(s.output_shape),
            "parameters": s.parameters,
        }
        for which, summary in (("generator", g_summary), ("discriminator", d_summary))
        for s in summary
    ]
    memory = _memory(g, gan, info, g_summary, d_summary, spec.fit.batch_size)
    return DryRun(
        parameters=sum(p.numel() for p in gan.parameters()),
        output_shape=gan.generator.output_shape,
        layers=rows,
        estimated_memory_bytes=memory,
    )


def _memory(
    g: GANSpec,
    gan: GAN,
    info: DataInfo,
    g_summary: list[LayerSummary],
    d_summary: list[LayerSummary],
    batch: int,
) -> int:
    """Weights, gradients and each network's optimizer state; activations of one generator pass and
    of the discriminator on a real and a fake batch (wgan_gp: and on the interpolates)."""
    weights = 0
    for net, spec in ((gan.generator, g.generator), (gan.discriminator, g.discriminator)):
        weights += (
            sum(p.numel() for p in net.parameters())
            * FLOAT_BYTES
            * (2 + optimizer_slots(spec.optimizer))
        )
    per_g = sum(math.prod(s.output_shape) for s in g_summary)
    per_d = math.prod(info.input_shape) + sum(math.prod(s.output_shape) for s in d_summary)
    passes = 3 if g.variant == "wgan_gp" else 2
    return int(weights + 2 * batch * FLOAT_BYTES * (per_g + passes * per_d))


# -- predict -------------------------------------------------------------------------------------
def _gan(model: FamilyModel) -> GAN:
    return cast(GAN, model.module)


def _labels(
    gan: GAN, labels: list[int] | None, n: int | None, device: torch.device
) -> torch.Tensor | None:
    """The request's class ids as a tensor; checked against the model and the count."""
    if gan.num_classes is None:
        if labels is not None:
            raise PredictError(
                f"labels condition a cgan; this {gan.variant} model takes none", "labels"
            )
        return None
    if labels is None:
        return None
    if n is not None and len(labels) != n:
        raise PredictError(
            f"give one label per sample: {len(labels)} labels for {n} samples", "labels"
        )
    bad = [label for label in labels if label >= gan.num_classes]
    if bad:
        raise PredictError(
            f"labels must be class ids 0..{gan.num_classes - 1}; got {bad[0]}", "labels"
        )
    return torch.tensor(labels, dtype=torch.long, device=device)


def generate(model: FamilyModel, req: OperationRequest) -> dict[str, Any]:
    """`count` samples (default 8, or one per label) in the dataset's raw units; `seed` repeats a draw.
    A cgan generates the given `labels`, or cycles through the classes when none are given."""
    gan = _gan(model)
    if req.instances is not None:
        raise PredictError(
            "generate draws its own latent vectors: give `count` (and `seed`), not instances",
            "instances",
        )
    labels = _labels(gan, req.labels, req.count, model.device)
    count = req.count or (len(labels) if labels is not None else DEFAULT_COUNT)
    if gan.num_classes is not None and labels is None:
        labels = torch.arange(count, device=model.device) % gan.num_classes
    seed = req.seed if req.seed is not None else int(torch.Generator().seed() % 2**31)
    samples = gan.generate(gan.noise(count, seed), labels)
    out: dict[str, Any] = {"predictions": raw_units(samples, model.meta.preprocessing)}
    if labels is not None:
        out["class_ids"] = labels.tolist()
        out["classes"] = model.meta.class_names or [str(i) for i in range(gan.num_classes or 0)]
    return out


def discriminate(model: FamilyModel, req: OperationRequest) -> dict[str, Any]:
    """Per instance (raw units): the probability that it is real, or wgan_gp's critic score."""
    gan = _gan(model)
    if req.instances is None:
        raise PredictError("give `instances` to discriminate: samples in the dataset's raw units")
    if req.count is not None or req.seed is not None:
        raise PredictError(
            "count and seed are for generate; discriminate scores the instances given",
            "count" if req.count is not None else "seed",
        )
    x = prepare_instances(
        req.instances, model.info.input_shape, model.meta.preprocessing, False, model.device
    )
    if gan.num_classes is not None and req.labels is None:
        raise PredictError(
            "a cgan's discriminator scores a sample with its class: give one label per instance",
            "labels",
        )
    labels = _labels(gan, req.labels, len(x), model.device)
    scores = gan.score(x, labels).float()
    values = scores if gan.variant == "wgan_gp" else torch.sigmoid(scores)
    return {"predictions": values.cpu().tolist()}


OPERATIONS: dict[str, Operation] = {"generate": generate, "discriminate": discriminate}
