"""A checkpoint's JSON: the contract between training (the engine writes it) and serving (predict
reads it), one pydantic model per kind of file, written and read here only.

Version 2 (`"format": "fitserve.checkpoint", "format_version": 2`) is this module's models.
Version 1 (`"format": "fitserve.checkpoint/1"`, written before issue 12) was the same JSON with
the optimizers under the keys "optimizer", "optimizer1", ...: `upgrade_v1` turns it into
version 2 on reading, so its checkpoints still resume and serve. A newer version is refused by
name, never half read. The tensors' file is the same in both.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypeAliasType, TypedDict

from core.spec import AnyJob, DataInfo
from models.errors import CheckpointError

FORMAT: Final = "fitserve.checkpoint"
FORMAT_VERSION: Final = 2
V1_FORMAT = "fitserve.checkpoint/1"

# An affine map's offset or scale: one number, or one per feature, pixel or time step (any rank).
Numbers = TypeAliasType("Numbers", "float | list[Numbers]")


class Affine(TypedDict):
    """`(x - offset) * scale`, fitted on the training split by core.preprocessing."""

    offset: Numbers
    scale: Numbers


class Preprocessing(TypedDict, total=False):
    """What predict applies to raw instances. A TypedDict, not a model: the training data carries
    the same dict (core.preprocessing makes it, and core may not import models)."""

    features: Affine | None
    target: Affine | None  # regression targets
    binarize: float  # dataset.binarize, present only when it was set


class Monitor(BaseModel):
    """What an early-stopping or reduce-on-plateau monitor remembers between epochs."""

    best: float | None = None
    best_epoch: int = 0
    wait: int = 0


class ScheduleState(BaseModel):
    lr: float  # reduce-on-plateau's current rate; the other schedules compute theirs from the epoch
    plateau: Monitor


class OptimizerState(BaseModel):
    """An optimizer's `state_dict()` less its tensors, which the safetensors file holds."""

    # torch's own keys, which differ by optimizer class and torch version (lr, betas, foreach, params, ...)
    param_groups: list[dict[str, Any]]
    # per-parameter state that is not a tensor, by parameter index: torch's, open for the same reason
    scalars: dict[str, dict[str, Any]]


class CheckpointMeta(BaseModel):
    """What every checkpoint's JSON holds; `kind` says which file it describes."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["fitserve.checkpoint"] = FORMAT
    format_version: Literal[2] = FORMAT_VERSION
    kind: Literal["epoch", "best", "model"]
    epoch: int  # epochs done
    step: int  # optimizer steps done
    spec: AnyJob
    info: DataInfo
    preprocessing: Preprocessing
    class_names: list[str] | None
    metrics: dict[str, float]  # the last epoch's; empty before the first
    history: list[dict[str, float]]
    schedule: ScheduleState
    stopper: Monitor
    # The tensors' file beside this one and its sha256: write_checkpoint, which alone knows them, fills both.
    weights: str = ""
    sha256: str = ""


class EpochMeta(CheckpointMeta):
    """`checkpoints/epoch-NNNN.json`: everything a resume needs to continue bit for bit."""

    kind: Literal["epoch"] = "epoch"
    optimizers: list[
        OptimizerState
    ]  # in the task's order; their tensors are "optim.", "optim1.", ...
    task: dict[
        str, Any
    ]  # Task.extra_state(): each family keeps its own (a GAN's counters, a grad scaler's)


class BestMeta(CheckpointMeta):
    """`checkpoints/best.json`: the weights early stopping's `restore_best` returns to."""

    kind: Literal["best"] = "best"


class ModelMeta(CheckpointMeta):
    """`model.json`: the final (or best) weights and everything predict needs."""

    kind: Literal["model"] = "model"
    test_metrics: dict[str, float]  # empty without a test split
    best_epoch: int | None  # with early stopping only
    family: dict[
        str, Any
    ]  # Task.describe(): what a family's predict needs (a VAE's latent size), per family


AnyMeta = EpochMeta | BestMeta | ModelMeta
_ANY_META: TypeAdapter[AnyMeta] = TypeAdapter(Annotated[AnyMeta, Field(discriminator="kind")])

_V1_OPTIMIZER = re.compile(r"^optimizer(\d*)$")
# What version 1 held beside its format string and optimizers, as version 2 names it too.
_V1_SHARED = {
    "kind",
    "epoch",
    "step",
    "spec",
    "info",
    "preprocessing",
    "class_names",
    "metrics",
    "history",
}
_V1_KEYS = _V1_SHARED | {
    "schedule",
    "stopper",
    "weights",
    "sha256",
    "task",
    "test_metrics",
    "best_epoch",
    "family",
}


def upgrade_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """A version-1 JSON as version 2: the optimizers "optimizer", "optimizer1", ... become a list in that
    order. The defaults are those the version-1 readers applied to a key missing from the files written
    before model families (no "task", "family" or "class_names"; an empty "preprocessing")."""
    out = {key: value for key, value in raw.items() if key in _V1_KEYS}
    out |= {
        "format": FORMAT,
        "format_version": 2,
    }  # 2, not FORMAT_VERSION: a version 3 would upgrade 2 next
    out.setdefault("class_names", None)
    out["preprocessing"] = raw.get("preprocessing") or {}
    if raw.get("kind") == "epoch":
        found = {
            int(m.group(1) or 0): value
            for key, value in raw.items()
            if (m := _V1_OPTIMIZER.match(key))
        }
        out["optimizers"] = [found[i] for i in sorted(found)]
        out["task"] = raw.get("task") or {}
    if raw.get("kind") == "model":
        out["family"] = raw.get("family") or {}
    return out


def parse_meta(raw: object, name: str) -> AnyMeta:
    """A checkpoint's JSON, as loaded, to its model; version 1 is upgraded first. `name` (the file's,
    never its path: errors reach users) leads every message."""
    if isinstance(raw, dict) and raw.get("format") == V1_FORMAT:
        raw = upgrade_v1(raw)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{name}: not a {FORMAT} checkpoint")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        why = "written by a newer Fitserve; upgrade this one to read it" if newer else "unknown"
        raise CheckpointError(
            f"{name}: format_version {version!r} is {why} (this one reads 1 and {FORMAT_VERSION})"
        )
    try:
        return _ANY_META.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = (
            first["loc"][1:] if first["loc"][:1] == (raw.get("kind"),) else first["loc"]
        )  # less the union's tag
        where = ".".join(str(part) for part in loc) or "its top level"
        raise CheckpointError(f"{name}: invalid at {where}: {first['msg']}") from exc


def dump_meta(meta: CheckpointMeta) -> bytes:
    """Indented JSON, for people as much as for the reader above; a NaN or an infinity is an error."""
    return json.dumps(meta.model_dump(mode="json"), indent=1, allow_nan=False).encode()
