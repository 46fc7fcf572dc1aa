"""Batched multi-LoRA: every row of a batch gets its own adapter in two batched matmuls per layer.

PEFT's mixed-adapter forward (``adapter_names=``) loops over the adapters present in a batch in
every LoRA layer: a gather of the rows, two small matmuls and a scatter per adapter, plus Python
list building per layer. With 8 adapters mixed in a batch that is 8x the kernel launches and
Python work of one adapter, and on a GPU it ran at 0.14x of the base model's throughput.

Here, as in S-LoRA and Punica, the adapters resident on a replica are stacked per layer:
``A[slot]`` is ``(r_max, in)``, ``B[slot]`` is ``(out, r_max)`` (ranks below ``r_max`` are
zero-padded), with slot 0 all zeros for rows that use the base model. A batch carries one slot
per row; each LoRA layer adds ``scale[slot] * (x @ A[slot]^T) @ B[slot]^T`` for all rows at once
(``torch.bmm`` over gathered per-row matrices; a plain matmul when every row uses the same
adapter; nothing when every row uses the base). The stacks hold the only copy of the adapter
weights: PEFT's own ``lora_A``/``lora_B`` parameters are views into them, so loading an adapter
costs its size once.

PEFT still loads and deletes adapters (its config parsing, key mapping and target modules); its
LoRA layers are switched off (``disable_adapter_layers``), so each returns its base layer's output
and a forward hook adds the batched update. Layers PEFT computes in another way — DoRA and
other variants, LoRA biases, LoRA on embeddings or convolutions — are left to PEFT's
``adapter_names=`` path: :func:`unsupported` says why.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["BatchedLoRA", "unsupported"]


@dataclass
class _Stack:
    """One LoRA layer's adapters, stacked by slot (slot 0: no adapter)."""

    a: torch.Tensor  # (slots, r_max, in)
    b: torch.Tensor  # (slots, out, r_max)
    scale: torch.Tensor  # (slots,)
    scales: list[float]  # the same, for the one-adapter path (no 0-d tensor on torch's default device)


def _lora_layers(model: Any) -> list[tuple[str, Any]]:
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def unsupported(model: Any) -> str | None:
    """Why ``model`` (a PeftModel) cannot use batched LoRA, or ``None`` when it can."""
    from peft.tuners.lora import Linear

    layers = _lora_layers(model)
    if not layers:
        return "the model has no LoRA layers"
    for name, layer in layers:
        if not isinstance(layer, Linear):
            return f"{name}: LoRA on a {type(layer).__name__} layer"
        if getattr(layer, "lora_variant", None):
            return f"{name}: a LoRA variant (DoRA, aLoRA) in {sorted(layer.lora_variant)}"
        for adapter, module in layer.lora_B.items():
            if getattr(module, "bias", None) is not None:
                return f"{name}: adapter {adapter} has a LoRA bias"
        if getattr(layer, "merged", False):
            return f"{name}: adapters are merged into the base weights"
    return None


class BatchedLoRA:
    """Per-row adapters for a PEFT model's LoRA layers (see the module docstring).

    Call :meth:`rebuild` after every adapter load or delete (on the thread that runs the
    model), and run each forward pass inside :meth:`rows`.
    """

    def __init__(self) -> None:
        self._stacks: dict[int, _Stack] = {}
        self._handles: list[Any] = []
        self._slots: dict[str, int] = {}
        self._rows: torch.Tensor | None = None
        self._single: int | None = None

    @property
    def adapters(self) -> tuple[str, ...]:
        """The stacked adapters, in slot order (slot 1 first)."""
        return tuple(self._slots)

    def rebuild(self, model: Any) -> None:
        """Stack the adapters PEFT holds now; point PEFT's LoRA weights at the stacks.

        Raises:
            ValueError: The model has layers batched LoRA cannot compute (:func:`unsupported`).
        """
        reason = unsupported(model)
        if reason is not None:
            raise ValueError(f"batched LoRA cannot serve this model: {reason}")
        self.close()
        names = list(model.peft_config)
        self._slots = {name: slot for slot, name in enumerate(names, start=1)}
        with torch.no_grad():
            for _, layer in _lora_layers(model):
                stack = self._stack(layer, names)
                self._stacks[id(layer)] = stack
                self._handles.append(layer.register_forward_hook(self._hook))
        model.base_model.disable_adapter_layers()

    def _stack(self, layer: Any, names: list[str]) -> _Stack:
        present = [n for n in names if n in layer.lora_A]
        base = layer.get_base_layer()
        weight = base.weight
        ref = layer.lora_A[present[0]].weight if present else weight
        in_f, out_f = layer.in_features, layer.out_features
        r_max = max((layer.lora_A[n].weight.shape[0] for n in present), default=1)
        slots = len(names) + 1
        a = torch.zeros((slots, r_max, in_f), dtype=ref.dtype, device=ref.device)
        b = torch.zeros((slots, out_f, r_max), dtype=ref.dtype, device=ref.device)
        scale = torch.zeros(slots, dtype=ref.dtype, device=ref.device)
        for name in present:
            slot = self._slots[name]
            wa, wb = layer.lora_A[name].weight, layer.lora_B[name].weight
            r = wa.shape[0]
            a[slot, :r].copy_(wa)
            b[slot, :, :r].copy_(wb)
            scale[slot] = float(layer.scaling[name])
            # PEFT's parameters become views: the stack is the only copy of the weights.
            wa.data = a[slot, :r]
            wb.data = b[slot, :, :r]
        return _Stack(a, b, scale, scale.tolist())

    def close(self) -> None:
        """Remove the hooks (the stacks stay referenced by PEFT's weights while it holds them)."""
        for handle in self._handles:
            handle.remove()
        self._handles, self._stacks = [], {}

    @contextlib.contextmanager
    def rows(self, adapters: Sequence[str | None], device: torch.device) -> Iterator[None]:
        """Run the forward passes inside with ``adapters[i]`` for row ``i`` (``None``: the base model).

        Raises:
            KeyError: An adapter that is not stacked.
        """
        slots = [0 if name is None else self._slots[name] for name in adapters]
        distinct = set(slots)
        self._single = slots[0] if len(distinct) == 1 else None
        self._rows = None if distinct == {0} else torch.tensor(slots, dtype=torch.long, device=device)
        try:
            yield
        finally:
            self._rows, self._single = None, None

    def _hook(self, layer: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        rows = self._rows
        if rows is None:
            return output
        stack = self._stacks[id(layer)]
        x: torch.Tensor = args[0].to(stack.a.dtype)
        delta: torch.Tensor
        if self._single is not None:
            slot = self._single
            delta = (x @ stack.a[slot].T) @ stack.b[slot].T * stack.scales[slot]
        else:
            batch = x.shape[0]
            flat = x.reshape(batch, -1, x.shape[-1])
            a, b = stack.a[rows], stack.b[rows]  # (batch, r, in), (batch, out, r)
            delta = torch.bmm(torch.bmm(flat, a.transpose(1, 2)), b.transpose(1, 2))
            delta = (delta * stack.scale[rows].view(batch, 1, 1)).reshape(*output.shape)
        return output + delta.to(output.dtype)
