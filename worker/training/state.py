"""Turning an optimizer's state into safetensors + JSON and back, exactly."""

from __future__ import annotations

from typing import Any

import torch

from models.checkpoint import split_prefix
from models.checkpoint_meta import OptimizerState


def optimizer_tensors(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], OptimizerState]:
    """(tensors for safetensors, JSON-safe rest) of `optimizer.state_dict()`."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, OptimizerState(param_groups=state["param_groups"], scalars=scalars)


def load_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: OptimizerState
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in split_prefix(tensors, "optim.").items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, slots in meta.scalars.items():
        state.setdefault(int(index), {}).update(slots)
    groups = [dict(group) for group in meta.param_groups]  # copies: the meta stays as read
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])  # JSON made the tuple a list
    optimizer.load_state_dict({"state": state, "param_groups": groups})
