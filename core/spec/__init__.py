"""The job spec: what a user posts, in Keras' vocabulary (`layers`, `compile`, `fit`).

Every number is bounded and every unknown field is an error, so the OpenAPI schema generated
from these classes is the whole contract. The package's modules:

- `base`: StrictModel (no unknown fields, no NaN) and Keras' name-for-its-defaults shorthand;
- `layers`: one class per layer `type`, joined in a discriminated union (`LayerSpec`);
- `optimizers`: one class per optimizer `type` (`OptimizerSpec`);
- `families`: each model family's section and its record in `REGISTRY`;
- `sections`: the dataset, model, compile and fit sections;
- `resources`: what a job needs of a worker (`resources`), and its `priority`;
- `job`: `JobSpec` and its variant per family (`AnyJob`, a posted body).
"""

from core.spec.base import StrictModel, named
from core.spec.job import (
    AnyJob,
    AutoencoderJob,
    CompiledJob,
    DBNJob,
    GANJob,
    JobSpec,
    RBMJob,
    Seq2SeqJob,
    SupervisedJob,
    VAEJob,
    as_family,
    variant_of,
)
from core.spec.layers import LayerSpec
from core.spec.optimizers import SGD, Adagrad, Adam, AdamW, OptimizerSpec, RMSprop
from core.spec.resources import Resources
from core.spec.sections import (
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
    MlpPreset,
    ModelSpec,
    PlateauSchedule,
    Regularization,
    ShallowVggPreset,
    StepSchedule,
)

__all__ = [
    "CLASSIFICATION_LOSSES",
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "AlvinnPreset",
    "AnyJob",
    "Augmentation",
    "AutoencoderJob",
    "BuiltinDataset",
    "CompileSpec",
    "CompiledJob",
    "CosineSchedule",
    "DBNJob",
    "DataInfo",
    "DatasetSpec",
    "EarlyStopping",
    "FitSpec",
    "GANJob",
    "JobSpec",
    "LayerSpec",
    "MlpPreset",
    "ModelSpec",
    "OptimizerSpec",
    "PlateauSchedule",
    "RBMJob",
    "RMSprop",
    "Regularization",
    "Resources",
    "Seq2SeqJob",
    "ShallowVggPreset",
    "StepSchedule",
    "StrictModel",
    "SupervisedJob",
    "VAEJob",
    "as_family",
    "named",
    "variant_of",
]
