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
    res, hp = spec.resources, spec.hyperparameters
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
    if res.strategy.startswith("deepspeed"):
        if not on_gpu:
            reasons.append(f"strategy {res.strategy} needs GPUs (gpusPerWorker >= 1 on a cluster that has them)")
        elif not (have_module("deepspeed") if deepspeed is None else deepspeed):
            reasons.append(f"strategy {res.strategy} needs the deepspeed package, which is not installed")
        else:
            reasons.append(
                f"strategy {res.strategy}: Corral generates the DeepSpeed config (corral.training.deepspeed_config) "
                "but does not train with DeepSpeed yet; use ddp or fsdp"
            )
    if res.strategy == "fsdp" and not on_gpu:
        reasons.append("strategy fsdp needs GPUs in Corral (it shards over NCCL); use ddp on CPU workers")
    if hp.precision == "fp16" and not on_gpu:
        reasons.append("precision fp16 needs a GPU; use bf16 or fp32 (or auto) on CPU")
    if hp.global_batch_size % (hp.micro_batch_size * res.workers):
        reasons.append(
            f"globalBatchSize must be a multiple of microBatchSize x workers (globalBatchSize={hp.global_batch_size}, "
            f"microBatchSize={hp.micro_batch_size}, workers={res.workers})"
        )
    return reasons
