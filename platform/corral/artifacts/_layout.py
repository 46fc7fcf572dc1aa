"""Where Corral keeps its own files under the artifact root: job folders and materialized catalog models.

The control plane writes a FineTuneJob's job file there, the trainer writes its events,
checkpoints and output there, and the metrics collector reads the events back. This
module is the one place the layout is spelled, so each of them finds the same files
without importing the others. Plain strings in, plain strings out.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["JobFiles", "catalog_model_uri", "job_files_under"]


@dataclass(frozen=True)
class JobFiles:
    """Where a job's files go, under its artifact folder.

    Attributes:
        folder: The job's folder: ``<root>/finetunejobs/<namespace>/<name>``.
        job_file: The resolved job document (contract 1): ``<folder>/job.json``.
        events: The trainer's JSON-lines events: ``<folder>/events.jsonl``.
        checkpoints: Ray Train's storage: ``<folder>/checkpoints``.
        output: The output model: ``<folder>/output``.
    """

    folder: str
    job_file: str
    events: str
    checkpoints: str
    output: str


def job_files_under(artifact_root: str, namespace: str, name: str) -> JobFiles:
    """The artifact folder of FineTuneJob ``namespace/name`` and the files in it.

    Args:
        artifact_root: The control plane's artifact root URI (``file://...`` or ``s3://...``).
        namespace: The job's namespace.
        name: The job's name.

    Returns:
        The job's folder and files.
    """
    folder = f"{artifact_root.rstrip('/')}/finetunejobs/{namespace}/{name}"
    return JobFiles(
        folder=folder,
        job_file=f"{folder}/job.json",
        events=f"{folder}/events.jsonl",
        checkpoints=f"{folder}/checkpoints",
        output=f"{folder}/output",
    )


def catalog_model_uri(artifact_root: str, catalog_name: str) -> str:
    """Where a locally built catalog model (the tiny presets) is materialized."""
    return f"{artifact_root.rstrip('/')}/catalog/{catalog_name}"
