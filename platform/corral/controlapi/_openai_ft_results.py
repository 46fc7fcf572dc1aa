"""What the OpenAI job object and events say about auto hyper-parameters, the evaluation and its results.

* :func:`hyperparameters_of`: ``n_epochs``/``batch_size``/``learning_rate_multiplier`` as chosen
  once the job is admitted (``status.hyperparameters``), else the job's own values or ``auto``;
  the multiplier is relative to the base model's recipe rate (``corral.catalog`` recipes).
* :func:`result_files`: the job's ``results.csv`` (step metrics, written next to its output Model
  by the trainer) registered in the files API under a deterministic id, as OpenAI's
  ``result_files``.
* :func:`corral_events`: a message with the chosen values and why, and a ``metrics`` event with
  the evaluation (fine-tune and base, trained and held-out).
"""

from __future__ import annotations

import hashlib
from typing import Any

from corral import catalog
from corral.api.v1alpha1 import FineTuneJob, Model
from corral.artifacts import ArtifactNotFound
from corral.store import NotFound, Store

from ._openai_files import FileStore
from ._openai_schemas import FineTuningJobEvent, JobHyperparameters

__all__ = ["RESULTS_FILENAME", "corral_events", "hyperparameters_of", "result_files", "results_file_id"]

RESULTS_FILENAME = "step_metrics.csv"
_A_MODEL = "corral.dev/openai-model"


def _event_id(*parts: object) -> str:
    return "ftevent-" + hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:24]


def results_file_id(job: FineTuneJob) -> str:
    """The id of a job's step-metrics CSV in the files API (deterministic)."""
    seed = f"{job.metadata.namespace}\0{job.metadata.name}\0results"
    return "file-" + hashlib.sha256(seed.encode()).hexdigest()[:24]


def _recipe_rate(job: FineTuneJob) -> float:
    """The learning rate ``learning_rate_multiplier`` multiplies: the base model's recipe rate."""
    model = job.metadata.annotations.get(_A_MODEL, job.spec.base_model.name)
    return catalog.load_catalog().recipe_for_model(model).learning_rate(job.spec.method)


def hyperparameters_of(job: FineTuneJob) -> JobHyperparameters:
    """The job's hyper-parameters: the chosen numbers once admitted, else its own values or ``auto``."""
    hp, chosen = job.spec.hyperparameters, job.status.hyperparameters
    rate = _recipe_rate(job)
    epochs: int | None = chosen.epochs if chosen is not None else hp.epochs
    batch: int | None = chosen.global_batch_size if chosen is not None else hp.global_batch_size
    lr: float | None = chosen.learning_rate if chosen is not None else hp.learning_rate
    return JobHyperparameters(
        n_epochs=epochs if epochs is not None else "auto",
        batch_size=batch if batch is not None else "auto",
        learning_rate_multiplier=round(lr / rate, 6) if lr is not None else "auto",
    )


def result_files(store: Store, files: FileStore | None, job: FineTuneJob) -> list[str]:
    """Register the job's ``results.csv`` (written next to its output Model) as a file; its id, once it exists."""
    if files is None or job.status.phase != "Succeeded" or not job.status.output_model:
        return []
    try:
        model = store.get(Model, job.metadata.namespace, job.status.output_model)
    except NotFound:
        return []
    uri = model.spec.uri or ""
    if not uri:
        return []
    file_id = results_file_id(job)
    try:
        namespace = job.metadata.namespace or "default"
        files.register(namespace, file_id, RESULTS_FILENAME, f"{uri}/results.csv", "fine-tune-results")
    except (ArtifactNotFound, OSError):
        return []
    return [file_id]


def corral_events(job: FineTuneJob, created: int, earlier: list[FineTuningJobEvent]) -> list[FineTuningJobEvent]:
    """The chosen hyper-parameters (a message) and the evaluation (a ``metrics`` event), when known."""
    job_id, st = job.metadata.name, job.status
    out: list[FineTuningJobEvent] = []
    if st.hyperparameters is not None:
        chosen = st.hyperparameters
        out.append(
            FineTuningJobEvent(
                id=_event_id(job_id, "hyperparameters", chosen.total_steps),
                created_at=created,
                level="info",
                message=f"Hyper-parameters: {chosen.epochs} epochs, batch {chosen.global_batch_size}, learning rate "
                f"{chosen.learning_rate:g}, {chosen.total_steps} steps. " + "; ".join(chosen.reasons),
                data=chosen.model_dump(mode="json", by_alias=False),
            )
        )
    if st.evaluation is not None:
        data: dict[str, Any] = {"evaluation": st.evaluation.model_dump(mode="json", by_alias=False)}
        for split in st.evaluation.splits:
            key = "valid" if split.name == "heldOut" else "train"
            data[f"{key}_similarity"] = split.fine_tuned.similarity_percent
            data[f"{key}_exact_match"] = split.fine_tuned.exact_match_percent
            data[f"{key}_base_similarity"] = split.base.similarity_percent
            data[f"{key}_base_exact_match"] = split.base.exact_match_percent
            data[f"{key}_eval_loss"] = split.fine_tuned.loss
        stamp = max([created] + [e.created_at for e in earlier])
        out.append(
            FineTuningJobEvent(
                id=_event_id(job_id, "evaluation"),
                created_at=stamp,
                level="info",
                message="Evaluation: " + st.evaluation.summary(),
                type="metrics",
                data=data,
            )
        )
    return out
