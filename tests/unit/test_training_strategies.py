"""FSDP and DeepSpeed ZeRO-2/3 on CPU: 2 gloo processes (no Ray) train like 1 process, checkpoint and resume.

Each sharded run stops at step 3 with a checkpoint (written per rank and merged, as Ray Train
does), a second model with another initialisation resumes from it and trains to the end. The
two halves together must equal one uninterrupted single-process run of the same global batch:
the same units in the same order, the same losses, the same weights. ``maxGradNorm`` 2.0
clips the first steps (gradient norm 3.0 and 2.3) and not the later ones (1.5 to 1.9): AdamW
alone would not see a gradient off by a constant factor, but which steps get clipped does, and
so does a gradient norm taken over one shard instead of the whole model. The DeepSpeed workers
start with an empty ``TORCH_EXTENSIONS_DIR`` (as on a fresh CI machine) that must stay empty:
training on CPU JIT-builds nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from corral.api.v1alpha1.finetunejob import Hyperparameters, LoRASpec
from corral.data import get_template
from corral.models import tiny
from corral.training import CheckpointData, LoopConfig, LoopResult, build_model, read_checkpoint, run_loop
from corral.training._data import Unit, load_conversations, prepare_units
from corral.training._loop import trainable_state_dict
from corral.training._strategies import check_resumable, output_model, transformer_blocks
from tests.support.parallel_loop import run_workers

torch.set_num_threads(1)
FACTS = Path(__file__).resolve().parents[1] / "fixtures/data/train/facts8.jsonl"
STOP = 3


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build("llama", tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="module")
def tok(base: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base)


@pytest.fixture(scope="module")
def train(tok: Any) -> list[Unit]:
    convs = load_conversations([(str(FACTS), "auto")])
    data = prepare_units(
        convs, [], tok, get_template("chatml", tok), max_seq_len=128, loss_on="assistant", packing=False
    )
    return list(data.train)


def _config() -> LoopConfig:
    hp = Hyperparameters(
        epochs=4,
        learning_rate=3e-3,
        global_batch_size=4,
        micro_batch_size=1,  # 2 workers: 2 accumulated micro-batches each; 1 process: 4
        warmup_ratio=0.25,
        lr_scheduler="cosine",
        max_grad_norm=2.0,
        seed=0,
    )
    return LoopConfig(
        method="lora",
        lora=LoRASpec(rank=8, alpha=16, dropout=0.0),
        hyperparameters=hp,
        checkpoint_every_steps=1000,
    )


@pytest.fixture(scope="module")
def reference(base: Path, tok: Any, train: list[Unit]) -> tuple[LoopResult, dict[str, torch.Tensor]]:
    """One process, no sharding, no interruption."""
    cfg = _config()
    model = build_model(base, "lora", cfg.lora, seed=0)
    result = run_loop(model, train, [], cfg, pad_id=tok.pad_token_id)
    return result, trainable_state_dict(model)


def _sharded(
    tmp_path_factory: pytest.TempPathFactory, base: Path, tok: Any, train: list[Unit], names: list[str]
) -> Path:
    out = tmp_path_factory.mktemp("sharded")
    run_workers(2, base, units=(train, tok.pad_token_id), config=_config(), out=out, strategies=names, stop=STOP)
    return out


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory: pytest.TempPathFactory, base: Path, tok: Any, train: list[Unit]) -> Path:
    return _sharded(tmp_path_factory, base, tok, train, ["fsdp"]) / "fsdp"


@pytest.fixture(scope="module")
def torch_extensions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The DeepSpeed workers' ``TORCH_EXTENSIONS_DIR``, empty like a fresh CI machine's: a JIT build would land here."""
    return tmp_path_factory.mktemp("torch_extensions")


@pytest.fixture(scope="module")
def deepspeed_runs(
    tmp_path_factory: pytest.TempPathFactory, base: Path, tok: Any, train: list[Unit], torch_extensions: Path
) -> Path:
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (pip install deepspeed)")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TORCH_EXTENSIONS_DIR", str(torch_extensions))  # the spawned workers inherit it
        return _sharded(tmp_path_factory, base, tok, train, ["deepspeed-zero2", "deepspeed-zero3"])


def _check_like_one_process(run: Path, reference: tuple[LoopResult, dict[str, torch.Tensor]]) -> dict[str, Any]:
    ref, ref_weights = reference
    got = json.loads((run / "result.json").read_text(encoding="utf-8"))
    assert got["steps"] == [STOP, ref.total_steps] and got["total_steps"] == ref.total_steps == 8
    assert got["checkpoints"] == [STOP, ref.total_steps]  # the stop, then the resumed run's end
    assert not got["part_final_weights"]  # the stopped run did not finish: nothing gathered for output
    # Neither repeated nor skipped, and the same arithmetic as one process.
    assert got["consumed"] == ref.consumed
    assert got["losses"] == pytest.approx(ref.losses, rel=2e-4)
    assert sum(got["losses"][-2:]) < sum(got["losses"][:2])
    weights = torch.load(run / "final.pt", weights_only=True)
    assert set(weights) == set(ref_weights)
    for key, value in ref_weights.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-3, atol=2e-5)
    return got


def test_transformer_blocks_are_the_decoder_layers(base: Path) -> None:
    model = build_model(base, "lora", LoRASpec(rank=4), seed=0)
    blocks = transformer_blocks(model)
    assert [type(b).__name__ for b in blocks] == ["LlamaDecoderLayer"] * 4


def test_fsdp_shards_and_trains_like_one_process(fsdp_run: Path, reference: Any) -> None:
    got = _check_like_one_process(fsdp_run, reference)
    layout = got["layout"]
    assert layout["local_numel"] * 2 == layout["full_numel"]  # each rank holds half of the adapter
    ckpt = read_checkpoint(fsdp_run / f"checkpoint_{STOP:08d}")
    assert ckpt.state["strategy"] == "fsdp" and ckpt.step == STOP
    # The full optimizer state, keyed by parameter name (resumable by any number of workers).
    assert set(ckpt.optimizer["state"]) == set(reference[1])


def test_fsdp_adapter_saves_and_loads_back_with_peft(fsdp_run: Path, base: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    weights = torch.load(fsdp_run / "final.pt", weights_only=True)
    cfg = _config()
    model = output_model(torch.nn.Identity(), weights, lambda: build_model(base, "lora", cfg.lora, seed=7))
    model.save_pretrained(str(tmp_path / "adapter"))  # type: ignore[operator]
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), tmp_path / "adapter")
    lora = {n: p for n, p in loaded.named_parameters() if "lora_" in n}
    assert set(lora) == set(weights)
    for key, value in weights.items():
        torch.testing.assert_close(lora[key], value)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_trains_like_one_process(deepspeed_runs: Path, reference: Any, stage: int) -> None:
    run = deepspeed_runs / f"deepspeed-zero{stage}"
    got = _check_like_one_process(run, reference)
    layout = got["layout"]
    if stage == 3:
        assert layout["local_numel"] * 2 == layout["full_numel"]  # parameters partitioned
    else:
        assert layout["local_numel"] == layout["full_numel"]  # parameters replicated, optimizer partitioned
    ckpt_dir = run / f"checkpoint_{STOP:08d}"
    parts = sorted(p.name for p in (ckpt_dir / "deepspeed" / "state").glob("*optim_states.pt"))
    assert parts == ["zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    ckpt = read_checkpoint(ckpt_dir)
    assert ckpt.state["strategy"] == f"deepspeed-zero{stage}" and ckpt.optimizer == {}
    assert ckpt.engine_dir is not None and ckpt.engine_dir.is_dir()
    assert set(ckpt.model) == set(reference[1])  # model.pt: the full adapter, as for every strategy


def test_deepspeed_on_cpu_compiles_nothing(deepspeed_runs: Path, torch_extensions: Path) -> None:
    # DeepSpeed's stock CPU accelerator JIT-builds its shared-memory comm op (deepspeed_shm_comm, ~90 s) on the
    # first deepspeed.initialize; corral.training._deepspeed.use_cpu_training_accelerator leaves it out.
    assert (deepspeed_runs / "deepspeed-zero3" / "result.json").is_file()
    assert sorted(p.name for p in torch_extensions.iterdir()) == []


def test_an_incomplete_deepspeed_checkpoint_is_not_resumed(deepspeed_runs: Path, tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "ckpt"
    shutil.copytree(deepspeed_runs / "deepspeed-zero2" / f"checkpoint_{STOP:08d}", ckpt_dir)
    (ckpt_dir / "deepspeed/state/zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    with pytest.raises(FileNotFoundError, match="holds 1 DeepSpeed optimizer partitions, not the 2"):
        read_checkpoint(ckpt_dir)


def test_a_checkpoint_of_another_strategy_or_world_is_refused(base: Path, tok: Any, train: list[Unit]) -> None:
    state = {"global_step": 3, "epoch": 1, "index": 4, "world_size": 4}
    ddp = CheckpointData(model={}, optimizer={}, scheduler={}, state=state)
    with pytest.raises(ValueError, match="written with strategy ddp and this run uses fsdp"):
        check_resumable(ddp, "fsdp", 2)
    check_resumable(ddp, "ddp", 2)  # ddp and fsdp checkpoints resume with any number of workers
    zero = CheckpointData(model={}, optimizer={}, scheduler={}, state={**state, "strategy": "deepspeed-zero3"})
    with pytest.raises(ValueError, match="optimizer partitions of 4 workers; this run has 2"):
        check_resumable(zero, "deepspeed-zero3", 2)
    cfg = _config()
    cfg.strategy = "fsdp"
    with pytest.raises(ValueError, match=r"strategy fsdp needs an initialised torch\.distributed process group"):
        run_loop(build_model(base, "lora", cfg.lora, seed=0), train, [], cfg, pad_id=tok.pad_token_id)
