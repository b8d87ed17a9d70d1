"""Small builders shared by the tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.queue import celery_app
from core.settings import get_settings
from core.spec import JobSpec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str, **fit: Any) -> JobSpec:
    """An example spec, with `fit` fields overridden."""
    raw = json.loads((EXAMPLES / f"{name}.json").read_text())
    raw["fit"] = {**raw.get("fit", {}), **fit}
    return JobSpec.model_validate(raw)


def digits_mlp(**fit: Any) -> JobSpec:
    """A small digits classifier with dropout, batch norm, adam and a schedule: state that resume must carry."""
    return JobSpec.model_validate(
        {
            "name": "digits-small",
            "dataset": {"name": "digits"},
            "model": {
                "layers": [
                    {"type": "flatten"},
                    {"type": "dense", "units": 32, "activation": "relu"},
                    {"type": "batchnorm"},
                    {"type": "dropout", "rate": 0.2},
                    {"type": "dense", "units": 10, "activation": "softmax"},
                ]
            },
            "compile": {
                "optimizer": {"type": "adam", "learning_rate": 0.01},
                "loss": "sparse_categorical_crossentropy",
                "metrics": ["accuracy"],
            },
            "fit": {
                "epochs": 4,
                "batch_size": 64,
                "validation_split": 0.2,
                "seed": 7,
                "lr_schedule": {"type": "cosine", "min_lr": 0.0001},
                **fit,
            },
        }
    )


def take_queued_job_ids() -> list[str]:
    """The job ids of the train messages waiting in the real broker (the embedded one under the
    test's data dir), taken off the queue."""
    found = []
    with (
        celery_app().connection_for_read() as connection,
        connection.SimpleQueue(get_settings().queue) as queue,
    ):
        while True:
            try:
                message = queue.get(timeout=1)
            except queue.Empty:
                return found
            found.append(message.payload[0][0])  # Celery's body: ((job_id, queue), kwargs, embed)
            message.ack()
