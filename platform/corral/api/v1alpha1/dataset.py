"""The ``Dataset`` kind: instruction data at a URI, its format and license, and the
validation report Corral writes after reading it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from .common import ArtifactURIString, Condition, CorralModel, LicenseSpec, LocalObjectReference, Resource

__all__ = [
    "DATASET_FORMATS",
    "Dataset",
    "DatasetError",
    "DatasetErrorCode",
    "DatasetReport",
    "DatasetSpec",
    "DatasetStatus",
    "RoleTokenStats",
]

DATASET_FORMATS = ("auto", "alpaca", "dolly", "sharegpt", "openai", "prompt_completion", "text")
DatasetFormat = Literal["auto", "alpaca", "dolly", "sharegpt", "openai", "prompt_completion", "text"]
DatasetErrorCode = Literal[
    "invalid_json",
    "missing_field",
    "unrecognized_role",
    "missing_content",
    "no_assistant_message",
    "wrong_type",
    "empty_example",
]
"""The error classes of a record, as in OpenAI's data preparation checks (``corral.data`` raises them)."""


class DatasetSpec(CorralModel):
    """What a Dataset declares."""

    uri: ArtifactURIString = Field(
        description="Where the data is: a JSON or JSONL file (file:///path or s3://bucket/key) or an hf:// dataset. "
        "In a YAML file, file://./relative/path is resolved against the file's folder by corral apply."
    )
    format: DatasetFormat = Field(
        default="auto",
        description="Record format: alpaca, dolly, sharegpt, openai (chat messages), prompt_completion, text, or "
        "auto to detect it (the detected format is reported in status.format).",
    )
    license: LicenseSpec = Field(description="License of the data; it joins the lineage of every model trained on it.")
    tokenizer_from: LocalObjectReference | None = Field(
        default=None, description="Model whose tokenizer counts tokens in the report; unset uses whitespace words."
    )
    max_seq_len: int = Field(default=2048, ge=16, le=1048576, description="Sequence length the report checks against.")
    over_length: Literal["drop", "truncate"] = Field(
        default="truncate", description="What training does with examples longer than maxSeqLen."
    )
    description: Annotated[str, Field(max_length=4096)] | None = Field(
        default=None, description="What the data is and where it came from."
    )


class RoleTokenStats(CorralModel):
    """Token count statistics for one role across the examples."""

    role: Literal["system", "user", "assistant", "all"] = Field(description="Role the statistics are for.")
    min: int = Field(ge=0, description="Fewest tokens.")
    p5: int = Field(ge=0, description="5th percentile.")
    median: int = Field(ge=0, description="Median.")
    p95: int = Field(ge=0, description="95th percentile.")
    max: int = Field(ge=0, description="Most tokens.")


class DatasetError(CorralModel):
    """One problem found in one record."""

    line: int = Field(ge=0, description="1-based line (JSONL) or 0-based index (JSON array) of the record.")
    field: str = Field(default="", description="Field path inside the record, e.g. messages[2].role.")
    code: DatasetErrorCode = Field(description="Error class, as in OpenAI's data preparation checks.")
    message: str = Field(description="What is wrong and what is allowed.")


class DatasetReport(CorralModel):
    """The validation report of a Dataset."""

    examples: int = Field(default=0, ge=0, description="Valid examples.")
    invalid: int = Field(default=0, ge=0, description="Records with at least one error.")
    duplicates: int = Field(default=0, ge=0, description="Exact duplicate examples.")
    over_max_seq_len: int = Field(default=0, ge=0, description="Examples longer than maxSeqLen.")
    leaked: int = Field(
        default=0, ge=0, description="Validation examples that also appear in the training data (train/val leakage)."
    )
    token_stats: list[RoleTokenStats] = Field(default_factory=list, description="Per-role token statistics.")
    errors: list[DatasetError] = Field(
        default_factory=list, max_length=100, description="The first errors found (at most 100)."
    )


class DatasetStatus(CorralModel):
    """What Corral observed about a Dataset."""

    observed_generation: int | None = Field(default=None, ge=0, description="Generation last reconciled.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready and other conditions.")
    format: str | None = Field(default=None, description="The format the data was read as (detected when auto).")
    sha256: str | None = Field(default=None, description="SHA-256 of the data file.")
    file_stat: str | None = Field(
        default=None,
        max_length=64,
        description="Size and modification time of a file:// data file when it was last read "
        "('<bytes>:<mtime ns>', or 'missing'); when the file changes or vanishes it is validated again.",
    )
    report: DatasetReport | None = Field(default=None, description="Validation report.")


class Dataset(Resource):
    """Instruction data that fine-tuning jobs train on."""

    KIND: ClassVar[str] = "Dataset"
    PLURAL: ClassVar[str] = "datasets"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("cds", "dset")
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, Any], ...]] = (
        {"name": "Format", "type": "string", "jsonPath": ".status.format"},
        {"name": "Examples", "type": "integer", "jsonPath": ".status.report.examples"},
        {"name": "Invalid", "type": "integer", "jsonPath": ".status.report.invalid"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "License", "type": "string", "jsonPath": ".spec.license.name"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )

    kind: Literal["Dataset"] = Field(default="Dataset", description="Always Dataset.")
    spec: DatasetSpec = Field(description="Desired state of the Dataset.")
    status: DatasetStatus = Field(default_factory=DatasetStatus, description="Observed state of the Dataset.")
