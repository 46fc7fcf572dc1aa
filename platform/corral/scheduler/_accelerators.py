"""Accelerators the estimator knows: memory, dense 16-bit peak and an assumed utilisation.

Peaks are the vendor's dense (no 2:4 sparsity) tensor-core figures for bf16, or fp16
where the chip has no bf16 (T4, V100). The utilisation (MFU: model FLOPs per second /
peak) is an assumption for fine-tuning with a current stack (PyTorch FSDP or DeepSpeed,
FlashAttention/SDPA, transformers + PEFT); each entry says why. Time estimates scale
with 1/MFU, so these numbers are the estimator's main lever: change them here, once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

__all__ = ["ACCELERATORS", "Accelerator", "get_accelerator", "ray_accelerator_type"]

GIB = 1024**3


@dataclass(frozen=True)
class Accelerator:
    """One accelerator type.

    Attributes:
        name: Corral's accelerator type, as in ``GPUPool.spec.acceleratorType``.
        memory_gib: Memory of one device in GiB (0 for CPU: the pool's memory decides).
        peak_tflops: Dense 16-bit tensor peak in TFLOP/s (bf16, or fp16 where there is no bf16).
        mfu: Assumed model-FLOPs utilisation for fine-tuning, 0..1.
        bf16: True when the chip computes in bf16 (``precision: auto`` picks bf16, else fp16).
        note: Where the numbers come from and why the MFU is what it is.
        known: False for a type not in the table (generic assumptions were used).
    """

    name: str
    memory_gib: float
    peak_tflops: float
    mfu: float
    bf16: bool
    note: str
    known: bool = True

    @property
    def memory_bytes(self) -> int:
        """Memory of one device in bytes."""
        return int(self.memory_gib * GIB)

    @property
    def effective_flops(self) -> float:
        """FLOP/s one device sustains on fine-tuning: peak x MFU."""
        return self.peak_tflops * 1e12 * self.mfu


ACCELERATORS: dict[str, Accelerator] = {
    a.name: a
    for a in (
        Accelerator(
            "nvidia-a100-40gb", 40, 312, 0.40, True,
            "A100 SXM 312 TFLOP/s dense bf16. MFU 0.40: FSDP/DeepSpeed fine-tunes of 7-13B models with "
            "FlashAttention-2 report 35-45%; 40 GB limits micro-batches, so no higher.",
        ),
        Accelerator(
            "nvidia-a100-80gb", 80, 312, 0.40, True,
            "A100 SXM 312 TFLOP/s dense bf16. MFU 0.40: the middle of the 35-45% fine-tuning range reported "
            "for HF Trainer/Accelerate + FlashAttention-2 (pre-training stacks reach 50%+ with larger batches).",
        ),
        Accelerator(
            "nvidia-h100-80gb", 80, 989, 0.35, True,
            "H100 SXM 989 TFLOP/s dense bf16. MFU 0.35: the higher peak is harder to feed (memory bandwidth "
            "grows 1.6x for 3.2x compute), fine-tuning stacks without FP8 report 30-40%.",
        ),
        Accelerator(
            "nvidia-h200", 141, 989, 0.38, True,
            "H200 SXM: H100's 989 TFLOP/s with 141 GB of HBM3e at 4.8 TB/s; more bandwidth and room for "
            "bigger micro-batches buy a few points of MFU over H100.",
        ),
        Accelerator(
            "nvidia-l4", 24, 121, 0.30, True,
            "L4 121 TFLOP/s dense bf16 at 72 W. MFU 0.30: power-capped clocks drop under sustained tensor "
            "load, and 300 GB/s memory starves small-batch fine-tunes.",
        ),
        Accelerator(
            "nvidia-a10g", 24, 70, 0.35, True,
            "A10G (AWS g5), a lower-clocked A10: about 70 TFLOP/s dense bf16 (approximate; the A10 datasheet "
            "says 125). MFU 0.35 as for other Ampere parts at small batch.",
        ),
        Accelerator(
            "nvidia-t4", 16, 65, 0.20, False,
            "T4 65 TFLOP/s dense fp16, no bf16 (fp16 with loss scaling). MFU 0.20: 70 W card that throttles "
            "and has 320 GB/s memory; fine-tunes on T4 are memory-bound.",
        ),
        Accelerator(
            "nvidia-v100", 16, 125, 0.30, False,
            "V100 SXM2 16 GB, 125 TFLOP/s dense fp16, no bf16. MFU 0.30: no FlashAttention-2 on Volta, "
            "attention falls back to slower kernels.",
        ),
        Accelerator(
            "nvidia-v100-32gb", 32, 125, 0.30, False,
            "V100 SXM2 32 GB, otherwise as nvidia-v100.",
        ),
        Accelerator(
            "cpu", 0, 2.0, 0.15, True,
            "A two-socket server CPU with AMX/AVX-512 bf16: about 2 TFLOP/s; MFU 0.15 for PyTorch eager "
            "training. Memory is the node's, given by the pool.",
        ),
    )
}

_ALIASES = {
    "nvidia-tesla-a100": "nvidia-a100-40gb",
    "nvidia-a100": "nvidia-a100-40gb",
    "nvidia-tesla-t4": "nvidia-t4",
    "nvidia-tesla-v100": "nvidia-v100",
    "nvidia-h100": "nvidia-h100-80gb",
    "nvidia-h100-mega-80gb": "nvidia-h100-80gb",
    "nvidia-h200-141gb": "nvidia-h200",
    "nvidia-l4-24gb": "nvidia-l4",
    "a100-40gb": "nvidia-a100-40gb",
    "a100-80gb": "nvidia-a100-80gb",
    "h100-80gb": "nvidia-h100-80gb",
    "h200": "nvidia-h200",
    "l4": "nvidia-l4",
    "a10g": "nvidia-a10g",
    "t4": "nvidia-t4",
    "v100": "nvidia-v100",
}


def get_accelerator(name: str, memory_bytes: int | None = None) -> Accelerator:
    """Return the accelerator called ``name`` (GKE names such as ``nvidia-tesla-t4`` work too).

    A type not in the table still gets an answer, marked ``known=False``: the given memory,
    100 TFLOP/s and MFU 0.30, so placement (which needs only memory) keeps working.

    Args:
        name: Accelerator type.
        memory_bytes: Device memory from the pool (``gpuMemory``); overrides the table's.
    """
    key = name.lower()
    found = ACCELERATORS.get(_ALIASES.get(key, key))
    if found is None:
        found = Accelerator(
            name, 0, 100.0, 0.30, True,
            f"{name!r} is not in Corral's accelerator table; assumed 100 TFLOP/s dense and MFU 0.30. "
            f"Known: {', '.join(ACCELERATORS)}.",
            known=False,
        )
    if memory_bytes is not None:
        found = replace(found, memory_gib=memory_bytes / GIB)
    return found


#: Ray's ``accelerator_type`` for each GPU type: the name Ray's NVIDIA detection gives a node with
#: that card (``ray/_private/accelerators/nvidia_gpu.py`` keeps the model token of the NVML device
#: name and drops the memory suffix: "NVIDIA A100-SXM4-80GB" -> "A100"), so a request for it
#: schedules on auto-detected nodes as well as on KubeRay worker pods, which declare the same name
#: (``accelerator_type:<X>`` in ``rayStartParams``). Memory variants share one Ray name: Corral's
#: placement (the pool's node selector) is what keeps an 80 GB job off 40 GB cards. Every value is
#: one of ``ray.util.accelerators`` (which Ray Serve LLM's ``LLMConfig.accelerator_type`` accepts).
_RAY_TYPES = {
    "nvidia-a100-40gb": "A100",
    "nvidia-a100-80gb": "A100",
    "nvidia-h100-80gb": "H100",
    "nvidia-h200": "H200",
    "nvidia-l4": "L4",
    "nvidia-a10g": "A10G",
    "nvidia-t4": "T4",
    "nvidia-v100": "V100",
    "nvidia-v100-32gb": "V100",
}


def ray_accelerator_type(name: str | None) -> str | None:
    """Ray's ``accelerator_type`` for Corral's accelerator type ``name`` (``nvidia-a100-80gb`` -> ``A100``).

    Args:
        name: ``GPUPool.spec.acceleratorType`` / ``resources.acceleratorType`` (aliases such as
            ``nvidia-tesla-t4`` work too).

    Returns:
        None for ``cpu`` or no type; the table's name for a known GPU; for another type, the
        name without its ``nvidia-``/``nvidia-tesla-`` prefix and memory suffix, upper-cased
        (``nvidia-b200`` -> ``B200``, ``nvidia-rtx-pro-6000`` -> ``RTX-PRO-6000``), which is how
        Ray names the cards it detects.
    """
    if not name or name.lower() == "cpu":
        return None
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key in _RAY_TYPES:
        return _RAY_TYPES[key]
    bare = re.sub(r"-\d+gb$", "", re.sub(r"^nvidia-(tesla-)?", "", key))
    return bare.upper()
