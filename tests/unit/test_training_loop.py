"""The training loop as plain PyTorch (no Ray): learning, batching, resume, eval, refusals."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from corral.api.v1alpha1.finetunejob import FineTuneJobSpec, Hyperparameters, LoRASpec
from corral.data import get_template
from corral.training import (
    DataPosition,
    LoopCallbacks,
    LoopConfig,
    batch_plan,
    build_model,
    preflight,
    qlora_refusal,
    read_checkpoint,
    run_loop,
)
from corral.training._data import Unit, collate_units, load_conversations, prepare_units, split_validation
from corral.training._model import trainable_state_dict
from corral.training._sampling import epoch_order, rank_microbatches

torch.set_num_threads(1)
FACTS = Path(__file__).resolve().parents[1] / "fixtures/data/train/facts8.jsonl"


def _units(tok: Any, *, packing: bool = False, split: int = 0) -> tuple[list[Unit], list[Unit]]:
    convs = load_conversations([(str(FACTS), "auto")])
    train, val = split_validation(convs, split, seed=0)
    data = prepare_units(
        train, val, tok, get_template("chatml", tok), max_seq_len=128, loss_on="assistant", packing=packing
    )
    return data.train, data.validation


def _config(**hp: Any) -> LoopConfig:
    method = hp.pop("method", "lora")
    values = {
        "epochs": 2,
        "learning_rate": 3e-3,
        "global_batch_size": 4,
        "micro_batch_size": 2,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
        "seed": 0,
        **hp,
    }
    lora = LoRASpec(rank=16, alpha=32, dropout=0.0) if method != "full" else None
    return LoopConfig(method=method, lora=lora, hyperparameters=Hyperparameters(**values), checkpoint_every_steps=1000)


class _Saver(LoopCallbacks):
    """Keeps every checkpoint in a folder, like Ray Train's storage."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.steps: list[int] = []
        self.progress: list[Any] = []

    def on_checkpoint(self, step: int, write: Any, metrics: dict[str, Any]) -> None:
        write(self.root / f"checkpoint_{step:08d}")
        self.steps.append(step)

    def on_progress(self, event: Any) -> None:
        self.progress.append(event)


def test_lora_loss_falls_and_the_facts_are_learnt(base: Path, tok: Any) -> None:
    from corral.models.tiny._corpus import QAPair
    from corral.models.tiny._finetune import exact_match

    train, _ = _units(tok)
    cfg = _config(epochs=30)
    model = build_model(base, "lora", cfg.lora, seed=0)
    result = run_loop(model, train, [], cfg, pad_id=tok.pad_token_id)
    assert result.global_step == result.total_steps == 60
    assert sum(result.losses[-5:]) / 5 < sum(result.losses[:5]) / 5 / 4
    import json

    rows = [json.loads(x) for x in FACTS.read_text(encoding="utf-8").splitlines()]
    pairs = [QAPair(r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows]
    assert exact_match(model, tok, pairs) == 1.0


def test_lora_trains_a_small_fraction_full_trains_everything(base: Path) -> None:
    lora = build_model(base, "lora", LoRASpec(rank=4, target_modules=["q_proj", "v_proj"]), seed=0)
    full = build_model(base, "full", None)
    n_lora = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    n_full = sum(p.numel() for p in full.parameters() if p.requires_grad)
    assert n_full == sum(p.numel() for p in full.parameters())
    # 4 layers x (q, v) x rank 4 x (128 in + 128 out)
    assert n_lora == 4 * 2 * 4 * (128 + 128)
    all_linear = build_model(base, "lora", LoRASpec(rank=4), seed=0)
    assert sum(p.numel() for p in all_linear.parameters() if p.requires_grad) > n_lora
    with pytest.raises(ValueError, match="all-linear cannot be combined"):
        build_model(base, "lora", LoRASpec(target_modules=["all-linear", "q_proj"]))


def test_full_finetune_loss_falls(base: Path, tok: Any) -> None:
    train, _ = _units(tok)
    cfg = _config(method="full", epochs=3, learning_rate=1e-3)
    result = run_loop(build_model(base, "full", None), train, [], cfg, pad_id=tok.pad_token_id)
    assert result.losses[-1] < result.losses[0]


def test_gradient_accumulation_equals_one_big_batch(base: Path, tok: Any) -> None:
    train, _ = _units(tok)
    weights = []
    for micro in (4, 1):  # one pass of 4 vs. 4 accumulated passes of 1
        cfg = _config(epochs=1, micro_batch_size=micro, lr_scheduler="cosine", warmup_ratio=0.5)
        model = build_model(base, "lora", cfg.lora, seed=0)
        run_loop(model, train, [], cfg, pad_id=tok.pad_token_id)
        weights.append(trainable_state_dict(model))
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=1e-4, atol=1e-6)


def test_batch_plan_names_the_numbers() -> None:
    assert batch_plan(32, 4, 2) == 4
    with pytest.raises(ValueError, match=r"globalBatchSize=30.*microBatchSize=4.*workers=2"):
        batch_plan(30, 4, 2)


def test_sampler_covers_each_unit_once_per_epoch_across_ranks() -> None:
    order = epoch_order(16, seed=3, epoch=1)
    assert sorted(order) == list(range(16))
    assert order != epoch_order(16, seed=3, epoch=2)
    assert order == epoch_order(16, seed=3, epoch=1)
    step = order[:8]
    per_rank = [rank_microbatches(step, r, 2, 2) for r in range(2)]
    assert all(len(mbs) == 2 for mbs in per_rank)  # accumulation 2
    flat = sorted(u for mbs in per_rank for mb in mbs for u in mb)
    assert flat == sorted(step)


def test_stop_and_resume_ends_with_the_same_weights(base: Path, tok: Any, tmp_path: Path) -> None:
    train, _ = _units(tok)
    # Dropout, warm-up and a cosine schedule: resume must restore RNG use, optimizer and scheduler.
    cfg = _config(epochs=3, lr_scheduler="cosine", warmup_ratio=0.2)
    cfg.lora = LoRASpec(rank=8, alpha=16, dropout=0.1)
    full = build_model(base, "lora", cfg.lora, seed=0)
    ref = run_loop(full, train, [], cfg, pad_id=tok.pad_token_id)

    saver = _Saver(tmp_path)
    first = build_model(base, "lora", cfg.lora, seed=0)
    part = run_loop(first, train, [], cfg, pad_id=tok.pad_token_id, callbacks=saver, stop_after_step=3)
    assert part.global_step == 3 and saver.steps == [3]
    assert part.position == DataPosition(epoch=1, index=4)  # 2 steps per epoch: epoch 1, after step 1 of it

    download = tmp_path / "download"  # as _read_stored does for s3://: read, then remove the folder
    shutil.copytree(tmp_path / "checkpoint_00000003", download)
    ckpt = read_checkpoint(download)
    shutil.rmtree(download)  # the (memory-mapped) tensors must not depend on the folder
    assert ckpt.step == 3 and ckpt.position == part.position
    second = build_model(base, "lora", cfg.lora, seed=1)  # another init: the checkpoint must overwrite it
    rest = run_loop(second, train, [], cfg, pad_id=tok.pad_token_id, resume=ckpt)
    assert rest.global_step == ref.global_step == 6
    # Neither repeated nor skipped: the two parts consumed exactly the uninterrupted sequence.
    assert part.consumed + rest.consumed == ref.consumed
    assert part.losses + rest.losses == pytest.approx(ref.losses, rel=1e-5)
    want, got = trainable_state_dict(full), trainable_state_dict(second)
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-7)


def test_eval_runs_on_the_held_out_split(base: Path, tok: Any) -> None:
    train, val = _units(tok, split=25)
    assert len(val) == 2 and len(train) == 6
    cfg = _config(epochs=2, global_batch_size=2, micro_batch_size=1, eval_every_steps=2)
    saver = _Saver(Path("/nonexistent"))
    saver.on_checkpoint = lambda *a, **k: None  # type: ignore[method-assign]
    result = run_loop(
        build_model(base, "lora", cfg.lora, seed=0), train, val, cfg, pad_id=tok.pad_token_id, callbacks=saver
    )
    assert [s for s, _ in result.eval_losses] == [2, 4, 6]
    assert all(math.isfinite(loss) and loss > 0 for _, loss in result.eval_losses)
    assert saver.progress[-1].eval_loss == result.eval_losses[-1][1]


def test_packing_masks_example_starts_and_trains(base: Path, tok: Any) -> None:
    train, _ = _units(tok, packing=True)
    assert len(train) < 8 and all(u.packed for u in train)
    batch = collate_units(train[:1], tok.pad_token_id)
    assert batch["attention_mask"].dim() == 4
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert len(starts) == len(train[0].lengths)
    assert all(batch["labels"][0, s] == -100 for s in starts)
    cfg = _config(epochs=4, global_batch_size=1, micro_batch_size=1)
    result = run_loop(build_model(base, "lora", cfg.lora, seed=0), train, [], cfg, pad_id=tok.pad_token_id)
    assert result.losses[-1] < result.losses[0]


def test_gradient_checkpointing_trains(base: Path, tok: Any) -> None:
    train, _ = _units(tok)
    cfg = _config(epochs=1, gradient_checkpointing=True)
    model = build_model(base, "lora", cfg.lora, seed=0, gradient_checkpointing=True)
    result = run_loop(model, train, [], cfg, pad_id=tok.pad_token_id)
    assert result.global_step == 2 and all(math.isfinite(loss) for loss in result.losses)


def test_too_little_data_for_one_batch(base: Path, tok: Any) -> None:
    train, _ = _units(tok)
    cfg = _config(global_batch_size=16, micro_batch_size=2)
    with pytest.raises(ValueError, match=r"globalBatchSize=16 is larger than the 8 training sequences"):
        run_loop(build_model(base, "lora", cfg.lora), train, [], cfg, pad_id=tok.pad_token_id)


def test_qlora_is_refused_on_cpu(base: Path) -> None:
    with pytest.raises(ValueError, match="qlora needs a CUDA GPU"):
        build_model(base, "qlora", LoRASpec())
    assert "bitsandbytes" in (qlora_refusal(cuda_available=True, bitsandbytes=False) or "")
    assert qlora_refusal(cuda_available=True, bitsandbytes=True) is None


def _spec(**kw: Any) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate({"baseModel": {"name": "m"}, "datasets": [{"name": "d"}], **kw})


def test_preflight_refusals() -> None:
    assert preflight(_spec(), cluster_gpus=0, cuda_available=False) == []
    qlora = _spec(method="qlora", resources={"gpusPerWorker": 1})
    reasons = preflight(qlora, cluster_gpus=0, cuda_available=False, bitsandbytes=False)
    assert any("asks for 1 GPUs" in r for r in reasons)
    assert any("qlora needs a CUDA GPU" in r for r in reasons)
    ds = _spec(resources={"gpusPerWorker": 1, "strategy": "deepspeed-zero3"})
    assert any(
        "needs the deepspeed package" in r for r in preflight(ds, cluster_gpus=8, cuda_available=True, deepspeed=False)
    )
    assert preflight(_spec(resources={"strategy": "fsdp", "workers": 2}), cluster_gpus=0, cuda_available=False) == []
    assert preflight(ds, cluster_gpus=8, cuda_available=True, deepspeed=True) == []
    ds_cpu = _spec(resources={"strategy": "deepspeed-zero2", "workers": 2})  # CPU workers: precision auto is fp32
    assert preflight(ds_cpu, cluster_gpus=0, cuda_available=False, deepspeed=True) == []
    assert any(
        "deepspeed-zero2 needs the deepspeed package" in r
        for r in preflight(ds_cpu, cluster_gpus=0, cuda_available=False, deepspeed=False)
    )
    ds_fp16 = _spec(resources={"strategy": "deepspeed-zero3"}, hyperparameters={"precision": "fp16"})
    assert any("fp16 needs a GPU" in r for r in preflight(ds_fp16, cluster_gpus=0, cuda_available=False))
    qlora_fsdp = _spec(method="qlora", resources={"gpusPerWorker": 1, "strategy": "fsdp"})
    assert any(
        "qlora trains with strategy ddp only (strategy=fsdp)" in r
        for r in preflight(qlora_fsdp, cluster_gpus=1, cuda_available=True, bitsandbytes=True)
    )
    odd = _spec(hyperparameters={"globalBatchSize": 6, "microBatchSize": 4}, resources={"workers": 2})
    assert any("globalBatchSize=6" in r for r in preflight(odd, cluster_gpus=0, cuda_available=False))


def test_resume_point_is_the_newest_readable_checkpoint_in_storage(base: Path, tok: Any, tmp_path: Path) -> None:
    from corral.training._ray import _resume_point, stored_checkpoints

    train, _ = _units(tok)
    run = tmp_path / "run"
    saver = _Saver(run)
    cfg = _config(epochs=2)
    cfg.checkpoint_every_steps = 1
    run_loop(build_model(base, "lora", cfg.lora, seed=0), train, [], cfg, pad_id=tok.pad_token_id, callbacks=saver)
    assert [s for s, _ in stored_checkpoints(f"file://{run}")] == [4, 3, 2, 1]
    assert _resume_point(None, f"file://{run}").step == 4  # type: ignore[union-attr]
    # The newest one was cut short by the failure: the one before it is used instead.
    (run / "checkpoint_00000004" / "model.pt").write_bytes(b"torn")
    assert _resume_point(None, f"file://{run}").step == 3  # type: ignore[union-attr]
    assert _resume_point(None, f"file://{tmp_path}/empty") is None
