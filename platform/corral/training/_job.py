"""The resolved job file that ``python -m corral.training --job JOB.json`` runs.

The control plane resolves a ``FineTuneJob`` into this self-contained document before it
submits the Ray job (DESIGN.md contract 1): every name is replaced by what the trainer
needs to read or write (base model location, dataset URIs and formats, license facts for
the model card, the artifact URIs of the output, the events file and the Ray storage, the
pool's price). The trainer never talks to the control plane.

Wire form is camelCase like the API types; unknown fields are errors.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from corral.api.v1alpha1.common import CorralModel, DecimalString
from corral.api.v1alpha1.finetunejob import FineTuneJobSpec
from corral.artifacts import ArtifactSettings, open_store

__all__ = ["BaseModelSource", "DatasetSource", "TrainingJob", "load_job"]

Name = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]


class BaseModelSource(CorralModel):
    """Where the base model's weights and tokenizer come from, and its license facts."""

    name: Annotated[str, Field(min_length=1, max_length=253)] = Field(
        description="Model name as recorded in the output's model card (base_model)."
    )
    uri: str | None = Field(
        default=None,
        description="Directory with config, weights and tokenizer: a local path, file://, s3:// or hf:// URI.",
    )
    builtin: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None,
        description="A tiny architecture (llama, gpt_neox, glm) built locally by corral.models.tiny instead of a URI.",
    )
    chat_template: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        default="auto", description="Template name from corral.data, or auto for the tokenizer's own."
    )
    license: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        description="SPDX id (or catalog license id) of the base model's license."
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Load the base with the model code shipped with its weights (transformers trust_remote_code); "
        "set by the control plane only for a Model with spec.trustRemoteCode in a namespace that allows it.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> BaseModelSource:
        if (self.uri is None) == (self.builtin is None):
            raise ValueError(
                f"baseModel needs exactly one of uri and builtin (uri={self.uri!r}, builtin={self.builtin!r})"
            )
        return self


class DatasetSource(CorralModel):
    """One training dataset."""

    name: Annotated[str, Field(min_length=1, max_length=253)] = Field(description="Dataset name (model card).")
    uri: str = Field(description="The data file: a local path, file:// or s3:// URI.")
    format: str = Field(default="auto", description="auto or a corral.data format name.")
    license: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="The dataset's license, for the model card."
    )


class TrainingJob(CorralModel):
    """A resolved FineTuneJob: everything one training run needs, and nothing to look up."""

    name: Name = Field(description="FineTuneJob name; also the deterministic Ray Train run name.")
    namespace: Name = Field(default="default", description="FineTuneJob namespace.")
    base_model: BaseModelSource = Field(description="The model to fine-tune.")
    datasets: list[DatasetSource] = Field(min_length=1, max_length=64, description="Training data.")
    validation_dataset: DatasetSource | None = Field(
        default=None, description="Evaluation data; unset holds out spec.hyperparameters.validationSplitPercent."
    )
    spec: FineTuneJobSpec = Field(description="The FineTuneJob spec as applied.")
    output_uri: str = Field(description="Folder URI the output Model (adapter or merged weights) is written to.")
    output_model_name: Annotated[str, Field(min_length=1, max_length=253)] | None = Field(
        default=None, description="Name of the output Model; unset uses spec.output.modelName or the job name."
    )
    events_uri: str = Field(description="JSON-lines events file the control plane reads (progress, checkpoints).")
    checkpoint_uri: str = Field(
        description="Ray Train storage (file:// or s3:// folder); checkpoints go under <checkpointUri>/<run name>/."
    )
    run_name: Annotated[str, Field(min_length=1, max_length=253)] | None = Field(
        default=None,
        description="Ray Train run name; unset uses namespace-name, so a re-submitted job resumes its own run.",
    )
    price_per_gpu_hour: DecimalString = Field(default="0", description="USD per GPU-hour of the pool it runs on.")
    max_failures: int = Field(default=2, ge=0, le=100, description="Worker failures Ray Train recovers from.")

    @property
    def model_name(self) -> str:
        """Name of the output Model."""
        return self.output_model_name or self.spec.output.model_name or self.name

    @property
    def default_run_name(self) -> str:
        """The deterministic Ray Train run name (``namespace-name``)."""
        return self.run_name or f"{self.namespace}-{self.name}"

    @property
    def price(self) -> Decimal:
        """Price per GPU-hour as a Decimal."""
        return Decimal(self.price_per_gpu_hour)


def load_job(path: str | Path) -> TrainingJob:
    """Read and validate a job file, wherever the control plane wrote it (contract 1).

    Args:
        path: The job file: a local path, or a ``file://`` / ``s3://`` URI read through
            :mod:`corral.artifacts` (on a cluster the operator uploads it under the artifact
            root, usually ``s3://``; the S3 endpoint and credentials come from the pod's
            environment, see ``ArtifactSettings.from_env``).

    Returns:
        The validated job.

    Raises:
        pydantic.ValidationError: The file does not describe a valid job.
        OSError: The file cannot be read (an :class:`~corral.artifacts.ArtifactError` for a URI).
    """
    text = str(path)
    if "://" in text:
        data = open_store(text, ArtifactSettings.from_env()).get_bytes(text)
        return TrainingJob.model_validate_json(data)
    return TrainingJob.model_validate_json(Path(path).read_text(encoding="utf-8"))
