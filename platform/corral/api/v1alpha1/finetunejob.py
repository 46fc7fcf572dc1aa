"""The ``FineTuneJob`` kind: train a base Model on Datasets with Ray Train and
produce a new Model (a LoRA adapter or merged weights), optionally deploying it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from .common import (
    Condition,
    CorralModel,
    DecimalString,
    IntendedUse,
    LocalObjectReference,
    Placement,
    QuantityString,
    Resource,
    repeated,
)

__all__ = [
    "CheckpointInfo",
    "CheckpointingSpec",
    "ChosenHyperparameters",
    "DatasetInput",
    "DeployOnSuccess",
    "Evaluation",
    "EvaluationGate",
    "EvaluationScores",
    "EvaluationSpec",
    "EvaluationSplit",
    "FineTuneJob",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "GPU_HOLDING_PHASES",
    "Hyperparameters",
    "JobCost",
    "JobMetrics",
    "JobProgress",
    "LoRASpec",
    "OutputSpec",
    "ResolvedHyperparameters",
    "TrainingResources",
]

Method = Literal["lora", "qlora", "full"]
Strategy = Literal["ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"]
Phase = Literal["Pending", "Admitted", "Running", "Succeeded", "Failed", "Cancelled", "Suspended", "Preempted"]
GPU_HOLDING_PHASES: tuple[Phase, ...] = ("Admitted", "Running", "Preempted", "Suspended")
"""Phases in which a job's ``status.placement`` GPUs are held: Preempted and Suspended jobs keep them until
their Ray job has stopped, then the control plane sets ``placement.gpus`` to 0."""


class LoRASpec(CorralModel):
    """LoRA adapter shape (used by the lora and qlora methods)."""

    rank: int = Field(default=16, ge=1, le=1024, description="Rank r of the low-rank update.")
    alpha: int | None = Field(
        default=None, ge=1, le=4096, description="Scaling alpha; unset means 2 x rank, as LLaMA-Factory does."
    )
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=lambda: ["all-linear"],
        min_length=1,
        max_length=64,
        description="Module names to adapt (e.g. q_proj, v_proj), or all-linear for every linear layer.",
    )

    @property
    def effective_alpha(self) -> int:
        """Alpha as trained: the given value, or 2 x rank."""
        return self.alpha if self.alpha is not None else 2 * self.rank


class Hyperparameters(CorralModel):
    """Optimisation settings, named as in LLaMA-Factory, Axolotl and TRL.

    ``epochs``, ``learningRate``, ``globalBatchSize`` and ``validationSplitPercent`` left unset
    are ``auto``: the control plane chooses them from the base model's catalog recipe and the
    size of the data when it submits the job (``corral.catalog.choose_hyperparameters``), and
    records the values and why in ``status.hyperparameters``.
    """

    epochs: int | None = Field(
        default=None, ge=1, le=1000, description="Passes over the training data; unset: auto (enough optimizer steps)."
    )
    learning_rate: float | None = Field(
        default=None, gt=0.0, le=1.0, description="Peak learning rate of AdamW; unset: the base model's recipe."
    )
    global_batch_size: int | None = Field(
        default=None, ge=1, le=65536, description="Examples per optimizer step across all workers; unset: auto."
    )
    micro_batch_size: int = Field(
        default=4, ge=1, le=4096, description="Examples per forward pass per worker (gradients accumulate)."
    )
    warmup_ratio: float = Field(default=0.03, ge=0.0, le=0.5, description="Fraction of steps spent warming up.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        default="cosine", description="Learning-rate schedule after warm-up."
    )
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(default=1.0, gt=0.0, le=1000.0, description="Gradient clipping norm.")
    max_seq_len: int = Field(default=2048, ge=16, le=1048576, description="Tokens per training sequence.")
    packing: bool = Field(
        default=False, description="Pack several examples per sequence (no attention across example boundaries)."
    )
    loss_on: Literal["assistant", "completion", "all"] = Field(
        default="assistant", description="Which tokens carry loss: assistant turns, completions, or all tokens."
    )
    validation_split_percent: int | None = Field(
        default=None,
        ge=0,
        le=50,
        description="Percent of the data held out for evaluation when no validation dataset; unset: auto (10% from "
        "20 examples on, else 0).",
    )
    eval_every_steps: int | None = Field(default=None, ge=1, description="Evaluate every N steps; unset: each epoch.")
    seed: int = Field(default=42, ge=0, le=2**31 - 1, description="Random seed for data order and initialisation.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto", description="Training precision; auto picks bf16 where the hardware has it."
    )
    gradient_checkpointing: bool = Field(default=False, description="Trade compute for activation memory.")

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.microBatchSize) || !has(self.globalBatchSize) || "
                    "self.microBatchSize <= self.globalBatchSize",
                    "message": "microBatchSize must not exceed globalBatchSize",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _micro_le_global(self) -> Hyperparameters:
        if self.global_batch_size is not None and self.micro_batch_size > self.global_batch_size:
            raise ValueError(
                f"microBatchSize must not exceed globalBatchSize (microBatchSize={self.micro_batch_size}, "
                f"globalBatchSize={self.global_batch_size})"
            )
        return self

    def resolved(self) -> ResolvedHyperparameters:
        """These settings with every ``auto`` field filled: the chosen value, or the fixed fallback.

        The control plane writes the chosen values into the job file, so the trainer sees no
        ``auto``; the fallbacks (3 epochs, 2e-4, batch 32, no hold-out) only apply to a job file
        written by hand.
        """
        if isinstance(self, ResolvedHyperparameters):
            return self
        return ResolvedHyperparameters.model_validate(self.model_dump(exclude_none=True, by_alias=False))


class ResolvedHyperparameters(Hyperparameters):
    """``Hyperparameters`` with no ``auto`` left: what the trainer runs with."""

    epochs: int = Field(default=3, ge=1, le=1000, description="Passes over the training data.")
    learning_rate: float = Field(default=2e-4, gt=0.0, le=1.0, description="Peak learning rate of AdamW.")
    global_batch_size: int = Field(
        default=32, ge=1, le=65536, description="Examples per optimizer step across all workers."
    )
    validation_split_percent: int = Field(
        default=0, ge=0, le=50, description="Percent of the data held out for evaluation when no validation dataset."
    )


class CheckpointingSpec(CorralModel):
    """When checkpoints are written and how a restarted job resumes."""

    every_steps: int = Field(default=100, ge=1, description="Write a checkpoint every N optimizer steps.")
    keep: int = Field(default=3, ge=1, le=100, description="How many recent checkpoints to keep.")
    resume: Literal["auto", "never"] = Field(
        default="auto", description="auto: a restarted job continues from its newest checkpoint; never: start over."
    )


class TrainingResources(CorralModel):
    """Compute for a fine-tune: Ray Train workers and where they run."""

    workers: int = Field(default=1, ge=1, le=4096, description="Ray Train workers (one process each).")
    gpus_per_worker: int = Field(default=0, ge=0, le=16, description="GPUs per worker; 0 trains on CPUs.")
    cpus_per_worker: QuantityString = Field(default="1", description="CPUs per worker, as a quantity (e.g. 500m, 4).")
    memory_per_worker: QuantityString | None = Field(default=None, description="Memory per worker, e.g. 32Gi.")
    pool: Annotated[str, Field(min_length=1, max_length=253)] | None = Field(
        default=None, description="Pin the job to this GPUPool; unset lets the scheduler choose."
    )
    accelerator_type: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="Only pools with this accelerator type, e.g. nvidia-a100-80gb."
    )
    strategy: Strategy = Field(default="ddp", description="Data-parallel strategy: ddp, fsdp, or DeepSpeed ZeRO-2/3.")
    queue: Annotated[str, Field(min_length=1, max_length=253)] | None = Field(
        default=None, description="Kueue LocalQueue; children are labelled and created suspended for Kueue."
    )
    priority: int = Field(default=0, ge=-1000, le=1000, description="Higher runs first; serving defaults above.")
    preemptible: bool = Field(
        default=False, description="May be preempted by higher-priority work; resumes from its last checkpoint."
    )


class DatasetInput(CorralModel):
    """A Dataset the job trains on."""

    name: Annotated[str, Field(min_length=1, max_length=253)] = Field(description="Name of the Dataset.")


class OutputSpec(CorralModel):
    """The Model a successful job creates."""

    model_name: Annotated[str, Field(min_length=1, max_length=253)] | None = Field(
        default=None, description="Name of the output Model; unset uses the job's name."
    )
    merge: bool = Field(
        default=False, description="Merge the adapter into the base and output full weights (lora/qlora only)."
    )


class EvaluationGate(CorralModel):
    """Thresholds the evaluation must meet before the output is promoted to the deployment.

    Scores are percentages of the ``metric`` (0-100) over the evaluated examples. Below any
    threshold the output is not deployed; the job still succeeds, and its ``Promoted``
    condition names the score and the threshold.
    """

    metric: Literal["similarity", "exactMatch"] = Field(
        default="similarity",
        description="similarity: mean normalized similarity of the answer to the reference (0-100); exactMatch: "
        "percent of answers equal to the reference after normalization.",
    )
    min_trained_score_percent: int | None = Field(
        default=None, ge=0, le=100, description="Minimum score on the sample of training examples."
    )
    min_held_out_score_percent: int | None = Field(
        default=None, ge=0, le=100, description="Minimum score on the held-out split or validation dataset."
    )
    min_improvement_percent: int | None = Field(
        default=1,
        ge=-100,
        le=100,
        description="Minimum points the fine-tune must score above the base model on the same questions (held-out "
        "when there is a held-out split, else the training sample); unset: no comparison.",
    )


class DeployOnSuccess(CorralModel):
    """Create or update a ModelDeployment with the output once the job succeeds and passes its gate."""

    deployment: Annotated[str, Field(min_length=1, max_length=253)] = Field(
        description="ModelDeployment to create, or to add the adapter to when it exists."
    )
    served_name: Annotated[str, Field(min_length=1, max_length=253)] | None = Field(
        default=None, description="Name clients pass as model; unset uses the output Model's name."
    )
    gate: EvaluationGate = Field(
        default_factory=EvaluationGate,
        description="Evaluation thresholds for promotion (default: at least 1 point better than the base model).",
    )


class EvaluationSpec(CorralModel):
    """How the finished fine-tune is scored before promotion (always, after training)."""

    max_examples: int = Field(
        default=64, ge=1, le=4096, description="Examples scored per split (held-out, training sample)."
    )
    max_new_tokens: int = Field(default=64, ge=1, le=4096, description="Longest generated answer, in tokens.")


class FineTuneJobSpec(CorralModel):
    """What a FineTuneJob declares."""

    base_model: LocalObjectReference = Field(description="The Model to fine-tune.")
    datasets: list[DatasetInput] = Field(
        min_length=1,
        max_length=64,
        description="Datasets to train on (each named once).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    validation_dataset: DatasetInput | None = Field(
        default=None, description="Dataset for evaluation; unset holds out hyperparameters.validationSplitPercent."
    )
    method: Method = Field(default="lora", description="lora, qlora (4-bit base, GPU only) or full fine-tuning.")
    lora: LoRASpec | None = Field(default=None, description="LoRA shape; only with lora and qlora (defaults apply).")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters, description="Optimisation settings.")
    chat_template: Literal["auto", "llama-2", "llama-3", "vicuna", "alpaca", "chatml", "chatglm", "dolly"] | None = (
        Field(default=None, description="Prompt format to train with; unset uses the base model's.")
    )
    checkpointing: CheckpointingSpec = Field(default_factory=CheckpointingSpec, description="Checkpoint policy.")
    resources: TrainingResources = Field(default_factory=TrainingResources, description="Compute and placement.")
    output: OutputSpec = Field(default_factory=OutputSpec, description="The Model this job produces.")
    intended_use: IntendedUse = Field(
        default="research", description="research or commercial; commercial is refused when a license forbids it."
    )
    evaluation: EvaluationSpec = Field(
        default_factory=EvaluationSpec, description="How the result is scored before it is promoted."
    )
    deploy_on_success: DeployOnSuccess | None = Field(default=None, description="Deploy the output when done.")
    suspend: bool = Field(default=False, description="True stops the job (it resumes from its checkpoint when unset).")
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Fail the job when it runs longer than this."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.lora) || !has(self.method) || self.method != 'full'",
                    "message": "lora is only allowed with method lora or qlora",
                },
                {
                    "rule": "!has(self.method) || self.method != 'qlora' || "
                    "(has(self.resources) && has(self.resources.gpusPerWorker) && self.resources.gpusPerWorker >= 1)",
                    "message": "method qlora needs resources.gpusPerWorker >= 1 (4-bit bases run on GPUs only)",
                },
                {
                    "rule": "!has(self.output) || !has(self.output.merge) || !self.output.merge || "
                    "!has(self.method) || self.method != 'full'",
                    "message": "output.merge applies only to lora and qlora",
                },
                {
                    "rule": "self.baseModel == oldSelf.baseModel && self.datasets == oldSelf.datasets && "
                    "self.method == oldSelf.method",
                    "message": "baseModel, datasets and method are immutable; create a new FineTuneJob",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _cross_field(self) -> FineTuneJobSpec:
        if self.lora is not None and self.method == "full":
            raise ValueError("lora is only allowed with method lora or qlora (method='full')")
        dupes = repeated([d.name for d in self.datasets])
        if dupes:
            raise ValueError(f"each dataset may be listed once (repeated: {dupes})")
        if self.method == "qlora" and self.resources.gpus_per_worker < 1:
            raise ValueError(
                "method qlora needs resources.gpusPerWorker >= 1 (4-bit bases run on GPUs only; "
                f"gpusPerWorker={self.resources.gpus_per_worker})"
            )
        if self.output.merge and self.method == "full":
            raise ValueError("output.merge applies only to lora and qlora (method='full')")
        return self

    @property
    def effective_lora(self) -> LoRASpec | None:
        """The LoRA shape to train with: the given one, defaults for lora/qlora, None for full."""
        if self.method == "full":
            return None
        return self.lora if self.lora is not None else LoRASpec()


class JobProgress(CorralModel):
    """Where a running job is."""

    step: int = Field(default=0, ge=0, description="Optimizer steps done.")
    total_steps: int = Field(default=0, ge=0, description="Optimizer steps planned.")
    epoch: int = Field(default=0, ge=0, description="Current epoch (1-based once training started).")
    percent: int = Field(default=0, ge=0, le=100, description="step / totalSteps in percent.")
    eta_seconds: int | None = Field(default=None, ge=0, description="Estimated seconds to completion.")


class JobMetrics(CorralModel):
    """The latest training metrics."""

    loss: float | None = Field(
        default=None, description="Training loss at the last logged step (4 significant digits)."
    )
    eval_loss: float | None = Field(
        default=None, description="Evaluation loss at the last evaluation (4 significant digits)."
    )
    learning_rate: float | None = Field(default=None, description="Learning rate at the last logged step.")
    tokens_per_second: float | None = Field(default=None, ge=0, description="Trained tokens per second, all workers.")


class CheckpointInfo(CorralModel):
    """A checkpoint written by the job."""

    step: int = Field(ge=0, description="Optimizer step of the checkpoint.")
    uri: str = Field(description="Where the checkpoint is.")
    created_at: datetime | None = Field(default=None, description="When it was written.")


class JobCost(CorralModel):
    """GPU time and money a job used."""

    gpu_seconds: int = Field(default=0, ge=0, description="GPU-seconds used so far (GPUs x wall seconds).")
    usd: DecimalString = Field(default="0", description="Accrued cost in US dollars from the pool's price.")
    estimated_usd: DecimalString | None = Field(default=None, description="Estimated total cost before it ran.")


class ChosenHyperparameters(CorralModel):
    """The hyper-parameters a job trains with, and why (``auto`` resolved at submission)."""

    epochs: int = Field(ge=1, description="Passes over the training data.")
    learning_rate: float = Field(gt=0.0, description="Peak learning rate.")
    global_batch_size: int = Field(ge=1, description="Examples per optimizer step.")
    validation_split_percent: int = Field(ge=0, le=100, description="Percent held out for evaluation.")
    train_examples: int = Field(ge=0, description="Training examples after the hold-out.")
    steps_per_epoch: int = Field(ge=0, description="Optimizer steps per epoch (the last partial batch is dropped).")
    total_steps: int = Field(ge=0, description="Optimizer steps planned.")
    reasons: list[Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=list, max_length=16, description="Why each auto value was chosen, one sentence each."
    )


class EvaluationScores(CorralModel):
    """One model's scores on one split."""

    loss: float | None = Field(default=None, description="Mean token loss on the reference answers.")
    exact_match_percent: float = Field(
        ge=0, le=100, description="Percent of greedy answers equal to the reference (whitespace and case normalized)."
    )
    similarity_percent: float = Field(
        ge=0, le=100, description="Mean normalized similarity of the answer to the reference (difflib ratio x 100)."
    )


class EvaluationSplit(CorralModel):
    """Scores of the fine-tune and of its base on the same questions."""

    name: Literal["heldOut", "trained"] = Field(
        description="heldOut: the validation dataset or held-out split; trained: a sample of the training data."
    )
    examples: int = Field(ge=0, description="Questions scored.")
    fine_tuned: EvaluationScores = Field(description="The fine-tuned model's scores.")
    base: EvaluationScores = Field(description="The base model's scores on the same questions.")


class Evaluation(CorralModel):
    """What the evaluation after training measured."""

    splits: list[EvaluationSplit] = Field(
        default_factory=list,
        max_length=2,
        description="Scores per split.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    seconds: float | None = Field(default=None, ge=0, description="Seconds the evaluation took.")

    def split(self, name: str) -> EvaluationSplit | None:
        """The split called ``name``, if evaluated."""
        return next((s for s in self.splits if s.name == name), None)

    def summary(self, metric: str = "similarity") -> str:
        """One line: each split's score (``similarity`` or ``exactMatch``) for the fine-tune and the base."""
        parts = []
        for s in self.splits:
            label = "held-out" if s.name == "heldOut" else "trained"
            tuned, base = s.fine_tuned, s.base
            if metric == "exactMatch":
                parts.append(
                    f"{label} exact match {tuned.exact_match_percent:.1f}% (base {base.exact_match_percent:.1f}%, "
                    f"{s.examples} questions)"
                )
            else:
                parts.append(
                    f"{label} similarity {tuned.similarity_percent:.1f}% (base {base.similarity_percent:.1f}%), "
                    f"exact match {tuned.exact_match_percent:.1f}% (base {base.exact_match_percent:.1f}%), "
                    f"{s.examples} questions"
                )
        return "; ".join(parts) or "nothing was scored"


class FineTuneJobStatus(CorralModel):
    """What Corral observed about a FineTuneJob."""

    observed_generation: int | None = Field(default=None, ge=0, description="Generation last reconciled.")
    phase: Phase | None = Field(default=None, description="Pending, Admitted, Running, Succeeded, Failed, ...")
    conditions: list[Condition] = Field(default_factory=list, description="Admitted, Running, Succeeded, ...")
    submission_id: str | None = Field(default=None, description="Ray job submission id (deterministic).")
    progress: JobProgress | None = Field(default=None, description="Step, epoch, percent, ETA.")
    metrics: JobMetrics | None = Field(default=None, description="Latest loss, eval loss, tokens/s.")
    hyperparameters: ChosenHyperparameters | None = Field(
        default=None, description="The hyper-parameters it trains with (auto resolved) and why."
    )
    evaluation: Evaluation | None = Field(
        default=None, description="Scores of the fine-tune and its base after training (held-out, trained)."
    )
    checkpoints: list[CheckpointInfo] = Field(default_factory=list, description="Checkpoints kept.")
    placement: Placement | None = Field(default=None, description="Where the scheduler placed the job.")
    preemptions: int = Field(
        default=0, ge=0, description="Times higher-priority work preempted the job; each run resumes from a checkpoint."
    )
    resumed_from_step: int | None = Field(
        default=None, ge=0, description="Checkpoint step the latest run resumed from (0: it started fresh)."
    )
    restarts: int = Field(
        default=0,
        ge=0,
        description="Times training restarted from a checkpoint (a worker lost, a preemption, a Ray restart); "
        "each is told by a TrainingResumed event.",
    )
    cost: JobCost | None = Field(default=None, description="GPU time and money used.")
    output_model: str | None = Field(default=None, description="Name of the Model the job created.")
    start_time: datetime | None = Field(default=None, description="When training started.")
    completion_time: datetime | None = Field(default=None, description="When the job finished.")


class FineTuneJob(Resource):
    """A fine-tune of a base Model on Datasets, producing a new Model."""

    KIND: ClassVar[str] = "FineTuneJob"
    PLURAL: ClassVar[str] = "finetunejobs"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("ftj", "ft")
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, Any], ...]] = (
        {"name": "Base", "type": "string", "jsonPath": ".spec.baseModel.name"},
        {"name": "Method", "type": "string", "jsonPath": ".spec.method"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Progress", "type": "integer", "jsonPath": ".status.progress.percent"},
        {"name": "GPUs", "type": "integer", "jsonPath": ".status.placement.gpus"},
        {"name": "Loss", "type": "number", "jsonPath": ".status.metrics.loss", "priority": 1},
        {"name": "Preemptions", "type": "integer", "jsonPath": ".status.preemptions", "priority": 1},
        {"name": "Output", "type": "string", "jsonPath": ".status.outputModel", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )

    kind: Literal["FineTuneJob"] = Field(default="FineTuneJob", description="Always FineTuneJob.")
    spec: FineTuneJobSpec = Field(description="Desired state of the FineTuneJob.")
    status: FineTuneJobStatus = Field(
        default_factory=FineTuneJobStatus, description="Observed state of the FineTuneJob."
    )
