"""A job's summary: what the submit's dry run found (its layers, shapes and parameters) and what
the model takes (its input shape, classes and value range), kept with the job for the dashboard's
model view and its try-the-model panel."""

from __future__ import annotations

from typing import Any

from api.schemas import JobSummary, LayerRow, ModelInput
from core.spec import DataInfo, variant_of
from core.tables import Job
from models.families import OPERATION_NAMES
from models.validation import DryRun

DESCRIBED = ("class_names", "feature_names", "feature_means", "value_range")


def build_summary(
    report: DryRun, info: DataInfo, description: dict[str, Any], name: str, dataset_id: str | None
) -> dict[str, Any]:
    """What the job row keeps. `info` is what the model was built for; `description` the
    dataset's (Dataset.describe): an upload from before some of its fields were described lacks
    them, and they are kept as null."""
    return {
        "output_shape": list(report.output_shape),
        "layers": report.layers,
        "input": {
            "dataset": name,
            "dataset_id": dataset_id,
            "kind": info.kind,
            "task": info.task,
            "input_shape": list(info.input_shape),
            "num_classes": info.num_classes,
            **{key: description.get(key) for key in DESCRIBED},
        },
    }


def to_summary(job: Job) -> JobSummary:
    family = variant_of(job.spec).FAMILY  # reads `family` alone: the spec was checked at submit
    kept: dict[str, Any] = job.summary or {}
    given = kept.get("input")
    return JobSummary(
        family=family,
        operations=list(OPERATION_NAMES[family]),
        parameters=job.parameters,
        estimated_memory_bytes=job.estimated_memory_bytes,
        output_shape=kept.get("output_shape"),
        layers=[LayerRow.model_validate(row) for row in kept.get("layers", [])],
        input=None if given is None else ModelInput.model_validate(given),
    )
