"""``ServeAppArgs``: the plain-JSON ``args`` of Corral's Serve application (engine ``transformers``).

This is what :func:`corral.serving.serve_config` writes into an application's ``args``
and what :func:`corral.serving.build_app` reads back inside the Serve controller, so it
must survive a round trip through YAML (a ``RayService``'s ``serveConfigV2``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AdapterSource", "HoldArgs", "ServeAppArgs"]


class AdapterSource(BaseModel):
    """One LoRA adapter a deployment serves."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Name clients pass as model to reach the adapter.")
    uri: str = Field(min_length=1, description="Artifact URI of the adapter directory (file://, s3://, hf://).")


class HoldArgs(BaseModel):
    """How the activator in front of a scale-to-zero deployment holds requests."""

    model_config = ConfigDict(extra="forbid")

    timeout_seconds: int = Field(ge=1, le=3600, description="Longest wait for a replica before answering 503.")
    retry_after_seconds: int = Field(ge=0, le=3600, description="Retry-After of that 503: the estimated cold start.")


class ChatAuthArgs(BaseModel):
    """Who may call the endpoint: bearer tokens of the deployment's namespace, as SHA-256 digests."""

    model_config = ConfigDict(extra="forbid")

    token_sha256: list[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(
        default_factory=list,
        description="Hex SHA-256 digests of the accepted tokens (the namespace's tenants and the admins); empty "
        "(and no tokens_env): every call is refused.",
    )
    tokens_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$", max_length=128)] | None = Field(
        default=None,
        description="Environment variable of the replica holding more accepted tokens, one per line or comma-"
        "separated (on a cluster: the namespace's chat-tokens Secret, which the Ray pods mount; the operator never "
        "reads it). Unset or empty adds none.",
    )
    namespace: str | None = Field(
        default=None,
        max_length=63,
        description="Namespace of the ModelDeployment whose endpoint this is (asked about in a SubjectAccessReview "
        "when the pods accept Kubernetes tokens).",
    )
    deployment: str | None = Field(
        default=None, max_length=253, description="Name of that ModelDeployment (the SubjectAccessReview's name)."
    )


class ServeAppArgs(BaseModel):
    """Arguments of ``corral.serving:build_app``."""

    model_config = ConfigDict(extra="forbid")

    served_name: str = Field(min_length=1, description="Name clients pass as model to reach the base model.")
    model_uri: str = Field(min_length=1, description="Artifact URI of the base model directory.")
    adapters: list[AdapterSource] = Field(default_factory=list, description="Adapters served next to the base.")
    max_adapters_per_replica: int = Field(default=8, ge=1, description="Adapters resident per replica (LRU).")
    max_concurrent_sequences: int = Field(default=16, ge=1, description="Batch size of a replica.")
    max_queued_requests: int = Field(
        default=64, ge=1, description="Requests a replica queues beyond its batch before answering 429."
    )
    max_context_length: int | None = Field(
        default=None, ge=16, description="Longest prompt + answer in tokens; unset uses the model's."
    )
    chat_template: str | None = Field(
        default=None, description="Jinja chat template overriding the tokenizer's (the one the model was trained with)."
    )
    torch_threads: int = Field(default=1, ge=1, description="torch.set_num_threads in each replica.")
    trust_remote_code: bool = Field(
        default=False,
        description="Load the base with the model code shipped with its weights (a Model with trustRemoteCode, allowed "
        "in its namespace).",
    )
    auth: ChatAuthArgs | None = Field(
        default=None,
        description="Bearer tokens the endpoint accepts. The control plane always sets it; unset (a test serving an "
        "app by hand) leaves the endpoint open.",
    )
    max_body_bytes: int = Field(
        default=4 * 2**20, ge=1024, le=256 * 2**20, description="Largest request body read (413 beyond it)."
    )
    hold: HoldArgs | None = Field(
        default=None,
        description=(
            "Set for a deployment that scales to zero: an activator deployment takes the HTTP requests and holds "
            "each until a replica takes it (starting one from zero), or answers 503 with Retry-After past the timeout."
        ),
    )

    def served_names(self) -> list[str]:
        """The base name followed by the adapter names."""
        return [self.served_name, *(a.name for a in self.adapters)]
