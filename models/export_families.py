"""Which families export which graphs, and which cannot be exported and why."""

from __future__ import annotations

from models.export_generative import autoencoder_graphs, gan_graphs, vae_graphs
from models.export_graphs import ExportError, Graph
from models.export_supervised import supervised_graphs
from models.families import FamilyModel

# Families whose operations loop or sample inside the model: no single feed-forward graph serves them.
REFUSED_FAMILIES = {
    "seq2seq": "its predict is a greedy decoding loop, one step per output token, that no "
    "feed-forward graph holds",
    "rbm": "its operations run Gibbs sampling (random draws inside the model)",
    "dbn": "it is not exported in this version (its layers are RBMs' stacked weights)",
}

BUILDERS = {
    "supervised": supervised_graphs,
    "autoencoder": autoencoder_graphs,
    "vae": vae_graphs,
    "gan": gan_graphs,
}

# Served operations no export holds, and what to run instead.
NOT_EXPORTED = {
    "vae": {"sample": "draws its latents inside the service: draw N(0, I) latents and run decode"},
}


def graphs(model: FamilyModel) -> list[Graph]:
    """The family's exportable operations; a family that has none is an ExportError naming it."""
    family = model.spec.family
    if family in REFUSED_FAMILIES or family not in BUILDERS:
        why = REFUSED_FAMILIES.get(family, "no export is defined for it")
        raise ExportError(f"the {family} family cannot be exported: {why}")
    return BUILDERS[family](model)
