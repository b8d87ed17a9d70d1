"""The job spec: what a user posts, one variant per family, told apart by `family`.

`JobSpec` holds what every family shares (name, dataset, fit); each variant adds its family's
own section, so the type checker knows a VAE job has `spec.vae`. `JobSpec.model_validate` (and
`AnyJob`, the type of a posted body) picks the variant by `family` (supervised when absent) and
validates against it alone, so an error's `loc` reads as the body does (`model.layers.2.units`),
without the tag a plain tagged union would add in front.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import from_json

from core.spec.base import StrictModel
from core.spec.families import (
    REGISTRY,
    AutoencoderSpec,
    DBNSpec,
    Family,
    FamilyRecord,
    GANSpec,
    RBMSpec,
    Seq2SeqSpec,
    VAESpec,
)
from core.spec.resources import Resources
from core.spec.sections import CompileSpec, DatasetSpec, FitSpec, ModelSpec, PlateauSchedule


class JobSpec(StrictModel):
    """What every family's job holds; a posted spec validates as the variant `family` names."""

    FAMILY: ClassVar[str] = ""  # a variant's family: the REGISTRY key it stands for

    name: str = Field("job", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")
    family: Family = Field(
        "supervised", description="supervised (model + compile + fit) or a family section"
    )
    dataset: DatasetSpec
    fit: FitSpec = Field(default_factory=FitSpec)
    resources: Resources = Field(default_factory=Resources)
    priority: int = Field(
        0, ge=0, le=9, description="higher runs first; tenants take turns within a priority"
    )

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        """On JobSpec itself: the variant `family` names; on a variant: that variant."""
        if cls is not JobSpec:
            return super().model_validate(obj, **kwargs)
        return variant_of(obj).model_validate(obj, **kwargs)  # type: ignore[return-value]

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Self:
        if cls is not JobSpec:
            return super().model_validate_json(json_data, **kwargs)
        try:
            peeked = from_json(json_data)
        except ValueError:
            peeked = None  # the variant's own parse then says where the JSON is broken
        return variant_of(peeked).model_validate_json(json_data, **kwargs)  # type: ignore[return-value]

    @property
    def record(self) -> FamilyRecord:
        return REGISTRY[self.family]

    @property
    def compile_section(self) -> CompileSpec | None:
        """`compile`, for the families that take one (see CompiledJob)."""
        return None

    @property
    def compiled(self) -> CompileSpec:
        """`compile`, where the code knows its family takes one."""
        if (section := self.compile_section) is None:
            raise ValueError(f"family {self.family!r} has no `compile`")
        return section

    @property
    def supervised_model(self) -> ModelSpec:
        """`model`, where the code knows its job is supervised."""
        raise ValueError(f"family {self.family!r} has no `model`")

    @model_validator(mode="before")
    @classmethod
    def _family_sections(cls, data: Any) -> Any:
        """Its own section and no other family's, and `compile` where it compiles: said in words
        before the field checks would say `Field required` or `Extra inputs are not permitted`."""
        if cls is JobSpec or not isinstance(data, dict):
            return data
        record = REGISTRY[cls.FAMILY]
        f = record.name
        # Before one variant per family, a spec held every section and dumped the others as null:
        # stored jobs and version 1 checkpoints do, and such a spec still validates.
        foreign = {r.section for r in REGISTRY.values() if r is not record} | {"compile"}
        data = {k: v for k, v in data.items() if not (k in foreign and v is None)}
        if data.get(record.section) is None:
            own = "`model`" if record.section == "model" else f"its `{record.section}` section"
            raise ValueError(f"family {f!r} needs {own}")
        for other in REGISTRY.values():
            if other is not record and data.get(other.section) is not None:
                if other.section == "model":
                    raise ValueError(
                        f"`model` is for the supervised family; family {f!r} describes its "
                        f"networks in `{record.section}`"
                    )
                raise ValueError(
                    f"`{other.section}` is for family {other.name!r}; this job's family is {f!r}"
                )
        if record.compiles and data.get("compile") is None:
            raise ValueError(f"family {f!r} needs `compile` (optimizer and loss)")
        if not record.compiles and data.get("compile") is not None:
            raise ValueError(f"family {f!r} takes no `compile`: its optimizers are in `{f}`")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.dataset.validation_split is not None and self.fit.validation_split > 0:
            raise ValueError("give validation_split in `fit` or in `dataset`, not both")
        for key, monitor in self._monitors():
            if monitor not in self.metric_names():
                raise ValueError(
                    f"{key} monitors {monitor!r}, which this job does not report; "
                    f"choose one of {sorted(self.metric_names())}"
                )
        return self

    def _monitors(self) -> list[tuple[str, str]]:
        found = []
        if self.fit.early_stopping is not None:
            found.append(("fit.early_stopping", self.fit.early_stopping.monitor))
        if isinstance(self.fit.lr_schedule, PlateauSchedule):
            found.append(("fit.lr_schedule", self.fit.lr_schedule.monitor))
        return found

    @property
    def validation_split(self) -> float:
        if self.dataset.validation_split is not None:
            return self.dataset.validation_split
        return self.fit.validation_split

    def metric_names(self) -> set[str]:
        """The per-epoch metrics a monitor may name."""
        compiled = self.compile_section
        names = {"loss", *(compiled.metrics if compiled else []), *self.record.metrics}
        if self.validation_split > 0:
            names |= {f"val_{n}" for n in names}
        return names | set(self.record.epoch_metrics)


class CompiledJob(JobSpec):
    """A family trained by backprop with one optimizer and loss: `compile`."""

    compile: CompileSpec

    @property
    def compile_section(self) -> CompileSpec:
        return self.compile


class SupervisedJob(CompiledJob):
    """A network from `model` (layers or a preset), trained with `compile` and `fit` (the default)."""

    FAMILY = "supervised"
    family: Literal["supervised"] = "supervised"
    model: ModelSpec

    @property
    def supervised_model(self) -> ModelSpec:
        return self.model


class AutoencoderJob(CompiledJob):
    """An encoder and a decoder trained to reconstruct the input (docs/autoencoder.md)."""

    FAMILY = "autoencoder"
    family: Literal["autoencoder"]
    autoencoder: AutoencoderSpec


class VAEJob(CompiledJob):
    """A variational autoencoder: reconstruction plus a KL term (docs/autoencoder.md)."""

    FAMILY = "vae"
    family: Literal["vae"]
    vae: VAESpec


class GANJob(JobSpec):
    """A generator and a discriminator, each with its own optimizer (docs/gan.md)."""

    FAMILY = "gan"
    family: Literal["gan"]
    gan: GANSpec


class RBMJob(JobSpec):
    """A restricted Boltzmann machine trained by contrastive divergence (docs/rbm.md)."""

    FAMILY = "rbm"
    family: Literal["rbm"]
    rbm: RBMSpec


class DBNJob(CompiledJob):
    """A deep belief net: RBMs pretrained in turn, then fine-tuned with `compile` (docs/rbm.md)."""

    FAMILY = "dbn"
    family: Literal["dbn"]
    dbn: DBNSpec


class Seq2SeqJob(CompiledJob):
    """An encoder-decoder RNN with attention, from token ids to token ids (docs/seq2seq.md)."""

    FAMILY = "seq2seq"
    family: Literal["seq2seq"]
    seq2seq: Seq2SeqSpec


VARIANTS: dict[str, type[JobSpec]] = {
    c.FAMILY: c for c in (SupervisedJob, AutoencoderJob, VAEJob, GANJob, RBMJob, DBNJob, Seq2SeqJob)
}
if set(VARIANTS) != set(REGISTRY):  # a family registered without its variant, or the reverse
    raise RuntimeError(f"core.spec.job.VARIANTS {sorted(VARIANTS)} != REGISTRY {sorted(REGISTRY)}")


class JobFamily(BaseModel):
    """Reads `family` alone, to refuse an unknown one as the field's own error."""

    model_config = ConfigDict(extra="ignore")
    family: Family = "supervised"


Job = TypeVar("Job", bound=JobSpec)


def as_family(spec: JobSpec, variant: type[Job]) -> Job:
    """`spec` as its family's variant, where the caller knows the family (its own module)."""
    if not isinstance(spec, variant):
        raise TypeError(
            f"a {variant.FAMILY} job was expected; this one's family is {spec.family!r}"
        )
    return spec


def variant_of(data: Any) -> type[JobSpec]:
    """The variant a posted spec names; an unknown `family` is a 422 on that field."""
    if isinstance(data, JobSpec):
        return type(data)
    if not isinstance(data, dict):
        return SupervisedJob  # its own error then says what a spec is (an object)
    return VARIANTS[JobFamily.model_validate(data).family]


def _dispatch(value: Any, _: ValidatorFunctionWrapHandler) -> JobSpec:
    return JobSpec.model_validate(value)


if TYPE_CHECKING:
    AnyJob = JobSpec
else:
    # A posted body: the OpenAPI schema shows one variant per family with `family` as its
    # discriminator; validation goes through JobSpec.model_validate for untagged error locations.
    AnyJob = Annotated[
        SupervisedJob | AutoencoderJob | VAEJob | GANJob | RBMJob | DBNJob | Seq2SeqJob,
        Discriminator("family"),
        WrapValidator(_dispatch),
    ]
