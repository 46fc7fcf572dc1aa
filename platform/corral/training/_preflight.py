"""Up-front refusals: what this job cannot do on this hardware, said before any worker starts.

Each check returns a human sentence (or ``None``), so the entrypoint can refuse a job with
exit code 2 and a clear reason instead of crashing mid-run.
"""

from __future__ import annotations

import importlib.util

from corral.api.v1alpha1.finetunejob import FineTuneJobSpec

__all__ = ["have_module", "preflight", "qlora_refusal"]


def have_module(name: str) -> bool:
    """Whether ``name`` can be imported here."""
    return importlib.util.find_spec(name) is not None


def qlora_refusal(*, cuda_available: bool, bitsandbytes: bool | None = None) -> str | None:
    """Why QLoRA cannot run here, or ``None``.

    Args:
        cuda_available: Whether the training device is a CUDA GPU.
        bitsandbytes: Whether bitsandbytes is installed (``None``: look it up).
    """
    if not cuda_available:
        return (
            "method qlora needs a CUDA GPU (its 4-bit base runs on bitsandbytes' CUDA kernels) and none is "
            "available; use method lora, or run on a GPU pool with resources.gpusPerWorker >= 1"
        )
    if not (have_module("bitsandbytes") if bitsandbytes is None else bitsandbytes):
        return "method qlora needs the bitsandbytes package, which is not installed in the training image"
    return None


def preflight(
    spec: FineTuneJobSpec,
    *,
    cluster_gpus: float,
    cuda_available: bool,
    bitsandbytes: bool | None = None,
    deepspeed: bool | None = None,
) -> list[str]:
    """Every reason this job cannot run, empty when it can.

    Args:
        spec: The job spec.
        cluster_gpus: GPUs the Ray cluster has (``ray.cluster_resources()["GPU"]``).
        cuda_available: Whether the workers will see a CUDA device (the cluster has GPUs for them).
        bitsandbytes: Whether bitsandbytes is installed (``None``: look it up).
        deepspeed: Whether deepspeed is installed (``None``: look it up).

    Returns:
        Sentences, one per problem.
    """
    reasons: list[str] = []
    res, hp = spec.resources, spec.hyperparameters.resolved()
    gpus_needed = res.workers * res.gpus_per_worker
    if gpus_needed > cluster_gpus:
        reasons.append(
            f"the job asks for {gpus_needed} GPUs (workers={res.workers} x gpusPerWorker={res.gpus_per_worker}) "
            f"but the Ray cluster has {cluster_gpus:g}"
        )
    on_gpu = res.gpus_per_worker > 0 and cluster_gpus > 0
    if spec.method == "qlora":
        reason = qlora_refusal(cuda_available=on_gpu and cuda_available, bitsandbytes=bitsandbytes)
        if reason:
            reasons.append(reason)
    # DeepSpeed ZeRO-2/3 also trains on CPU workers (gloo; precision auto is fp32 there).
    if res.strategy.startswith("deepspeed") and not (have_module("deepspeed") if deepspeed is None else deepspeed):
        reasons.append(
            f"strategy {res.strategy} needs the deepspeed package, which is not installed in the training image "
            "(pip install deepspeed); use strategy ddp or fsdp without it"
        )
    if spec.method == "qlora" and res.strategy != "ddp":
        reasons.append(
            f"method qlora trains with strategy ddp only (strategy={res.strategy}): Corral does not shard a 4-bit "
            "base with FSDP or DeepSpeed"
        )
    if hp.precision == "fp16" and not on_gpu:
        reasons.append("precision fp16 needs a GPU; use bf16 or fp32 (or auto) on CPU")
    if hp.global_batch_size % (hp.micro_batch_size * res.workers):
        reasons.append(
            f"globalBatchSize must be a multiple of microBatchSize x workers (globalBatchSize={hp.global_batch_size}, "
            f"microBatchSize={hp.micro_batch_size}, workers={res.workers})"
        )
    return reasons
