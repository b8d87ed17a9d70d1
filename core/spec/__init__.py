"""The job spec: what a user posts, in Keras' vocabulary (`layers`, `compile`, `fit`).

Every number is bounded and every unknown field is an error, so the OpenAPI schema generated
from these classes is the whole contract. The package's modules:

- `base`: StrictModel (no unknown fields, no NaN) and Keras' name-for-its-defaults shorthand;
- `layers`: one class per layer `type`, joined in a discriminated union (`LayerSpec`);
- `optimizers`: one class per optimizer `type` (`OptimizerSpec`);
- `families`: each model family's section and its record in `REGISTRY`;
- `job`: the dataset, model, compile and fit sections, and `JobSpec` itself.
"""

from core.spec.base import StrictModel, named
from core.spec.job import (
    CLASSIFICATION_LOSSES,
    AlvinnPreset,
    Augmentation,
    BuiltinDataset,
    CompileSpec,
    CosineSchedule,
    DataInfo,
    DatasetSpec,
    EarlyStopping,
    FitSpec,
    JobSpec,
    MlpPreset,
    ModelSpec,
    PlateauSchedule,
    Regularization,
    ShallowVggPreset,
    StepSchedule,
)
from core.spec.layers import LayerSpec
from core.spec.optimizers import SGD, Adagrad, Adam, AdamW, OptimizerSpec, RMSprop

__all__ = [
    "CLASSIFICATION_LOSSES",
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "AlvinnPreset",
    "Augmentation",
    "BuiltinDataset",
    "CompileSpec",
    "CosineSchedule",
    "DataInfo",
    "DatasetSpec",
    "EarlyStopping",
    "FitSpec",
    "JobSpec",
    "LayerSpec",
    "MlpPreset",
    "ModelSpec",
    "OptimizerSpec",
    "PlateauSchedule",
    "RMSprop",
    "Regularization",
    "ShallowVggPreset",
    "StepSchedule",
    "StrictModel",
    "named",
]
