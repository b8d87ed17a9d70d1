"""Optimizers, as Keras names them and with its defaults; a name alone stands for its defaults."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from core.spec.base import StrictModel

Rate = Annotated[float, Field(gt=0.0, le=10.0)]


class SGD(StrictModel):
    type: Literal["sgd"]
    learning_rate: Rate = 0.01
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGD:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs a momentum above 0")
        return self


class Adagrad(StrictModel):
    type: Literal["adagrad"]
    learning_rate: Rate = 0.001
    initial_accumulator_value: float = Field(0.1, ge=0.0, le=10.0)
    epsilon: float = Field(1e-7, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)


class RMSprop(StrictModel):
    type: Literal["rmsprop"]
    learning_rate: Rate = 0.001
    rho: float = Field(0.9, gt=0.0, lt=1.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    epsilon: float = Field(1e-7, gt=0.0, le=1.0)
    centered: bool = False
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)


class _AdamFields(StrictModel):
    learning_rate: Rate = 0.001
    beta_1: float = Field(0.9, ge=0.0, lt=1.0)
    beta_2: float = Field(0.999, ge=0.0, lt=1.0)
    epsilon: float = Field(1e-7, gt=0.0, le=1.0)
    amsgrad: bool = False


class Adam(_AdamFields):
    type: Literal["adam"]
    weight_decay: float = Field(
        0.0, ge=0.0, le=1.0, description="L2 added to the gradient, as torch's Adam"
    )


class AdamW(_AdamFields):
    type: Literal["adamw"]
    weight_decay: float = Field(0.004, ge=0.0, le=1.0, description="decoupled weight decay")


OptimizerSpec = Annotated[SGD | Adagrad | RMSprop | Adam | AdamW, Field(discriminator="type")]
