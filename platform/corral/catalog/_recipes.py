"""Fine-tuning recipes and the ``auto`` hyper-parameter rule.

A recipe (``recipes:`` in ``catalog.yaml``) gives a model family its recommended peak
learning rate for LoRA, QLoRA and full fine-tuning, with where each number comes from, and
how many optimizer steps a fine-tune of it needs at least. :func:`choose_hyperparameters`
turns a job's hyper-parameters, the recipe and the size of its data into the values it
trains with, and says why in one sentence per value.

The rule for ``auto`` (every value a job sets itself is kept):

* ``validationSplitPercent``: 10 when the job names no validation dataset and has at least
  20 examples (so that every fine-tune is scored on questions it did not train on), else 0.
* ``globalBatchSize``: the largest power of two no larger than half the training examples,
  between ``microBatchSize x workers`` and 32 and a multiple of it: a small dataset still gets
  at least two optimizer steps an epoch.
* ``epochs``: OpenAI's documented default first (target 3 epochs; at least 100 examples seen
  in all, at most 25 epochs; at most 25,000 examples seen for large data, at least 1 epoch:
  the ``n_epochs`` estimate of OpenAI's "Data preparation and analysis for chat model
  fine-tuning" cookbook), then raised until the run has the recipe's ``minSteps`` optimizer
  steps, up to the recipe's ``maxEpochs``. Optimizer steps, not epochs, are what a small
  dataset runs short of: 64 examples at batch 16 are 4 steps an epoch, and 3 epochs (12
  steps at 2e-4) move a LoRA adapter almost nowhere.
* ``learningRate``: the recipe's rate for the job's method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from corral.api.v1alpha1.finetunejob import ChosenHyperparameters, Hyperparameters, ResolvedHyperparameters

__all__ = [
    "AUTO_VALIDATION_MIN_EXAMPLES",
    "AUTO_VALIDATION_PERCENT",
    "MAX_AUTO_BATCH",
    "OPENAI_MAX_EPOCHS",
    "OPENAI_MAX_TARGET_EXAMPLES",
    "OPENAI_MIN_TARGET_EXAMPLES",
    "OPENAI_TARGET_EPOCHS",
    "Choice",
    "Recipe",
    "choose_hyperparameters",
]

OPENAI_TARGET_EPOCHS = 3
OPENAI_MIN_TARGET_EXAMPLES = 100
OPENAI_MAX_TARGET_EXAMPLES = 25_000
OPENAI_MAX_EPOCHS = 25
AUTO_VALIDATION_PERCENT = 10
AUTO_VALIDATION_MIN_EXAMPLES = 20
MAX_AUTO_BATCH = 32

Rate = Annotated[float, Field(gt=0.0, le=1.0)]
Source = Annotated[str, Field(min_length=1, max_length=1024)]


class Recipe(BaseModel):
    """Recommended fine-tuning settings for a model family (``default``: any other family)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Annotated[str, Field(min_length=1, max_length=63)] = Field(
        description="Catalog family it applies to, or default."
    )
    lora_learning_rate: Rate = Field(description="Peak learning rate for LoRA.")
    qlora_learning_rate: Rate = Field(description="Peak learning rate for QLoRA.")
    full_learning_rate: Rate = Field(description="Peak learning rate for full fine-tuning.")
    min_steps: int = Field(ge=1, le=1_000_000, description="Fewest optimizer steps an auto run gets.")
    max_epochs: int = Field(ge=1, le=1000, description="Most epochs auto chooses to reach min_steps.")
    sources: list[Source] = Field(min_length=1, max_length=8, description="Where each number comes from.")

    def learning_rate(self, method: str) -> float:
        """The rate for ``method`` (lora, qlora or full)."""
        return {"lora": self.lora_learning_rate, "qlora": self.qlora_learning_rate}.get(method, self.full_learning_rate)


@dataclass(frozen=True)
class Choice:
    """What :func:`choose_hyperparameters` chose.

    Attributes:
        hyperparameters: Every value set (the job's own and the auto ones).
        status: The same for ``status.hyperparameters``, with the counts and reasons.
    """

    hyperparameters: ResolvedHyperparameters
    status: ChosenHyperparameters


def _pow2_floor(value: float) -> int:
    return 1 << max(0, math.floor(math.log2(value))) if value >= 1 else 1


def _auto_batch(n_train: int, unit: int) -> int:
    batch = min(MAX_AUTO_BATCH, _pow2_floor(n_train / 2))
    return max(unit, math.ceil(batch / unit) * unit)


def _openai_epochs(n_train: int) -> int:
    if n_train * OPENAI_TARGET_EPOCHS < OPENAI_MIN_TARGET_EXAMPLES:
        return min(OPENAI_MAX_EPOCHS, OPENAI_MIN_TARGET_EXAMPLES // max(1, n_train))
    if n_train * OPENAI_TARGET_EPOCHS > OPENAI_MAX_TARGET_EXAMPLES:
        return max(1, OPENAI_MAX_TARGET_EXAMPLES // n_train)
    return OPENAI_TARGET_EPOCHS


def choose_hyperparameters(
    hp: Hyperparameters,
    *,
    method: str,
    recipe: Recipe,
    examples: int,
    workers: int = 1,
    has_validation_dataset: bool = False,
) -> Choice:
    """Resolve ``auto`` hyper-parameters (see the module docstring for the rule).

    Args:
        hp: The job's ``spec.hyperparameters``.
        method: lora, qlora or full.
        recipe: The base model's recipe.
        examples: Training examples before any hold-out (the Datasets' validated counts).
        workers: Ray Train workers (the batch is a multiple of ``microBatchSize x workers``).
        has_validation_dataset: The job names a validation dataset (no hold-out then).

    Returns:
        The values and the reasons.
    """
    reasons: list[str] = []
    split = hp.validation_split_percent
    if split is None:
        split = (
            AUTO_VALIDATION_PERCENT if not has_validation_dataset and examples >= AUTO_VALIDATION_MIN_EXAMPLES else 0
        )
        why = (
            "a validation dataset is given"
            if has_validation_dataset
            else f"{examples} examples ({'>=' if split else '<'} {AUTO_VALIDATION_MIN_EXAMPLES})"
        )
        reasons.append(f"validationSplitPercent={split} (auto: {why})")
    held = max(1, math.floor(examples * split / 100)) if split and examples else 0
    n_train = max(0, examples - held)
    unit = hp.micro_batch_size * workers
    batch = hp.global_batch_size
    if batch is None:
        batch = _auto_batch(n_train, unit)
        reasons.append(
            f"globalBatchSize={batch} (auto: largest power of two <= half of {n_train} training examples, "
            f"within [{unit}, {MAX_AUTO_BATCH}], a multiple of microBatchSize x workers = {unit})"
        )
    per_epoch = n_train // batch if batch else 0
    epochs = hp.epochs
    if epochs is None:
        epochs = _openai_epochs(n_train)
        why = f"OpenAI's default for {n_train} examples is {epochs}"
        if per_epoch and epochs * per_epoch < recipe.min_steps:
            needed = min(recipe.max_epochs, math.ceil(recipe.min_steps / per_epoch))
            why += (
                f"; raised to {needed} so that {per_epoch} steps/epoch reach the {recipe.family} recipe's "
                f"minSteps={recipe.min_steps}"
                + (f" (capped at maxEpochs={recipe.max_epochs})" if needed == recipe.max_epochs else "")
            )
            epochs = max(epochs, needed)
        reasons.append(f"epochs={epochs} (auto: {why})")
    lr = hp.learning_rate
    if lr is None:
        lr = recipe.learning_rate(method)
        reasons.append(
            f"learningRate={lr:g} (auto: the {recipe.family} recipe for {method}; sources: catalog.yaml recipes)"
        )
    micro = min(hp.micro_batch_size, batch)
    resolved = ResolvedHyperparameters.model_validate(
        hp.model_dump(exclude_none=True, by_alias=False)
        | {
            "epochs": epochs,
            "learning_rate": lr,
            "global_batch_size": batch,
            "micro_batch_size": micro,
            "validation_split_percent": split,
        }
    )
    status = ChosenHyperparameters(
        epochs=epochs,
        learning_rate=lr,
        global_batch_size=batch,
        validation_split_percent=split,
        train_examples=n_train,
        steps_per_epoch=per_epoch,
        total_steps=per_epoch * epochs,
        reasons=reasons,
    )
    return Choice(resolved, status)
