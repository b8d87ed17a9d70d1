"""Neural-network architectures: the layer registry, spec to nn.Module, presets, objective,
dry-run, checkpoints and inference. Imports nothing of ours but the spec."""

import core  # noqa: F401 - sets OMP_WAIT_POLICY before anything imports torch
