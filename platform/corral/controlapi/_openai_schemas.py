"""Request and response shapes of Corral's OpenAI-style fine-tuning API (files, jobs, estimate).

Responses follow OpenAI's objects field for field so the official ``openai`` client parses
them (``File``, ``fine_tuning.job``, ``fine_tuning.job.event``, ``fine_tuning.job.checkpoint``,
cursor pages ``{object: "list", data, has_more}``); Corral adds a ``validation`` report to the
File object. Requests accept what the official client sends and nothing else
(``extra="forbid"``); Corral's own knobs travel in one ``corral`` extension object
(``extra_body={"corral": {...}}`` with the official client).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from corral.api.v1alpha1.common import CorralModel, IntendedUse, LicenseSpec
from corral.api.v1alpha1.finetunejob import EvaluationGate, LoRASpec, TrainingResources

__all__ = [
    "CorralExtension",
    "FileObject",
    "FineTuningJobCheckpoint",
    "FineTuningJobCreate",
    "FineTuningJobEvent",
    "FineTuningJobObject",
    "JobError",
    "JobHyperparameters",
    "JobMethod",
    "ListPage",
    "OpenAIError",
    "SupervisedIn",
    "SupervisedMethodIn",
]

AutoInt = Literal["auto"] | int
AutoFloat = Literal["auto"] | float


class OpenAIError(Exception):
    """An error rendered as OpenAI's ``{"error": {message, type, param, code}}`` body.

    Attributes:
        status: HTTP status code.
        message: What went wrong.
        code: Machine-readable code (``file_not_found``, ``invalid_training_file``, ...).
        param: The request parameter at fault, when there is one.
        type: OpenAI's error type (``invalid_request_error``, ``authentication_error``, ...).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests -------------------------------------------------------------------------------


class SupervisedIn(_Request):
    """``hyperparameters`` of a supervised job (also the deprecated top-level ``hyperparameters``)."""

    batch_size: AutoInt | None = Field(default=None, description="Examples per optimizer step (globalBatchSize).")
    learning_rate_multiplier: AutoFloat | None = Field(
        default=None, description="Multiplies Corral's learning rate (2e-4, or corral.hyperparameters.learningRate)."
    )
    n_epochs: AutoInt | None = Field(default=None, description="Passes over the training data (epochs).")


class SupervisedMethodIn(_Request):
    """``method.supervised``."""

    hyperparameters: SupervisedIn | None = None


class MethodIn(_Request):
    """``method``: only ``supervised`` is supported (``dpo``/``reinforcement`` are refused)."""

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethodIn | None = None
    dpo: dict[str, Any] | None = None
    reinforcement: dict[str, Any] | None = None


class CorralExtension(CorralModel):
    """Corral's knobs on ``POST /v1/fine_tuning/jobs`` (camelCase, as in the FineTuneJob spec).

    Attributes:
        lora: LoRA shape (rank, alpha, dropout, targetModules).
        resources: Workers, GPUs, pool, strategy of the FineTuneJob.
        hyperparameters: Any ``spec.hyperparameters`` field (learningRate, maxSeqLen, ...); the
            OpenAI fields (n_epochs, batch_size, learning_rate_multiplier, seed) apply on top.
        license: License of the uploaded data (default: proprietary, commercial use allowed).
        intended_use: ``research`` (default) or ``commercial``.
        deployment: ModelDeployment to add the adapter to (default ``openai-<base Model>``).
        gate: Evaluation thresholds for promotion (``deployOnSuccess.gate``: metric,
            minTrainedScorePercent, minHeldOutScorePercent, minImprovementPercent).
    """

    lora: LoRASpec | None = None
    resources: TrainingResources | None = None
    hyperparameters: dict[str, Any] | None = None
    license: LicenseSpec | None = None
    intended_use: IntendedUse | None = None
    deployment: str | None = Field(default=None, min_length=1, max_length=253)
    gate: EvaluationGate | None = None


class FineTuningJobCreate(_Request):
    """The body of ``POST /v1/fine_tuning/jobs`` (OpenAI's, plus ``corral``)."""

    model: str = Field(min_length=1, max_length=253)
    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    suffix: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    hyperparameters: SupervisedIn | None = None
    method: MethodIn | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    corral: CorralExtension | None = None


# -- responses ------------------------------------------------------------------------------


class FileObject(_Response):
    """OpenAI's File object plus Corral's ``validation`` report."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = None
    expires_at: int | None = None
    validation: dict[str, Any] | None = Field(
        default=None, description="Corral: the dataset validation report (format, examples, errors with lines)."
    )


class JobHyperparameters(_Response):
    """Hyper-parameters as OpenAI reports them."""

    batch_size: AutoInt | None = None
    learning_rate_multiplier: AutoFloat | None = None
    n_epochs: AutoInt | None = None


class _Supervised(_Response):
    hyperparameters: JobHyperparameters | None = None


class JobMethod(_Response):
    """``method`` of a job."""

    type: Literal["supervised"] = "supervised"
    supervised: _Supervised | None = None

    @classmethod
    def supervised_with(cls, hp: JobHyperparameters) -> JobMethod:
        """The supervised method carrying ``hp``."""
        return cls(supervised=_Supervised(hyperparameters=hp))


class JobError(_Response):
    """Why a job failed."""

    code: str
    message: str
    param: str | None = None


class FineTuningJobObject(_Response):
    """OpenAI's ``fine_tuning.job`` object."""

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    model: str
    created_at: int
    finished_at: int | None = None
    fine_tuned_model: str | None = None
    organization_id: str
    result_files: list[str] = Field(default_factory=list)
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    validation_file: str | None = None
    training_file: str
    hyperparameters: JobHyperparameters
    method: JobMethod
    seed: int
    trained_tokens: int | None = None
    error: JobError | None = None
    suffix: str | None = None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] = Field(default_factory=list)
    metadata: dict[str, str] | None = None


class FineTuningJobEvent(_Response):
    """OpenAI's ``fine_tuning.job.event`` object."""

    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"] = "message"
    data: dict[str, Any] | None = None


class CheckpointMetrics(_Response):
    """Metrics at a checkpoint's step (only what Corral measured is set)."""

    step: float | None = None
    train_loss: float | None = None
    valid_loss: float | None = None


class FineTuningJobCheckpoint(_Response):
    """OpenAI's ``fine_tuning.job.checkpoint`` object."""

    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class ListPage(_Response):
    """A cursor page: ``{object: "list", data, has_more, first_id, last_id}``."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None

    @classmethod
    def of(cls, items: list[dict[str, Any]], after: str | None, limit: int) -> ListPage:
        """Page ``items`` (already in order) after the item whose ``id`` is ``after``."""
        if after is not None:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        return cls(
            data=page,
            has_more=len(items) > limit,
            first_id=page[0]["id"] if page else None,
            last_id=page[-1]["id"] if page else None,
        )
