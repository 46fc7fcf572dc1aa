"""FSDP and DeepSpeed ZeRO-2/3 on CPU: 2 gloo processes (no Ray) train like 1 process, checkpoint and resume.

Each sharded run stops at step 3 with a checkpoint (written per rank and merged, as Ray Train
does), a second model with another initialisation resumes from it and trains to the end. The
two halves together must equal one uninterrupted single-process run of the same global batch:
the same units in the same order, the same losses, the same weights. ``maxGradNorm`` 2.0
clips the first steps (gradient norm 3.0 and 2.3) and not the later ones (1.5 to 1.9): AdamW
alone would not see a gradient off by a constant factor, but which steps get clipped does, and
so does a gradient norm taken over one shard instead of the whole model. The DeepSpeed workers
start with an empty ``TORCH_EXTENSIONS_DIR`` (as on a fresh CI machine) that must stay empty:
training on CPU JIT-builds nothing. The ZeRO-3 workers load the base model partitioned (inside
``deepspeed.zero.Init``): right after ``build_model`` each rank holds half of every base weight,
and the output model rank 0 rebuilds afterwards is whole again.

``fsdp`` also trains a full fine-tune (optimizer state for every weight, each rank writing its
shard with torch.distributed.checkpoint) and then changes the number of workers: 1 worker
resumes the 2 workers' step-3 checkpoint and stops at step 5; 2 workers resume that one, and a
copy of it in the older format (the full state in ``optimizer.pt``), to the end. Every chain
must still equal the uninterrupted single process.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

from corral.api.v1alpha1.finetunejob import Hyperparameters, LoRASpec
from corral.data import get_template
from corral.training import CheckpointData, LoopConfig, LoopResult, build_model, read_checkpoint, run_loop
from corral.training._data import Unit, load_conversations, prepare_units
from corral.training._model import Method, trainable_state_dict
from corral.training._strategies import StrategyName, check_resumable, output_model, transformer_blocks
from tests.support.drift import DRIFT_BOUND, assert_trained_alike, drift
from tests.support.parallel_loop import Job, run_workers

torch.set_num_threads(1)
FACTS = Path(__file__).resolve().parents[1] / "fixtures/data/train/facts8.jsonl"
STOP = 3
RESHARD_STOP = 5  # where the 1-worker run that resumed the 2 workers' checkpoint stops
GLOBAL_BATCH = 4


@pytest.fixture(scope="module")
def train(tok: Any) -> list[Unit]:
    convs = load_conversations([(str(FACTS), "auto")])
    data = prepare_units(
        convs, [], tok, get_template("chatml", tok), max_seq_len=128, loss_on="assistant", packing=False
    )
    return list(data.train)


class Reference(NamedTuple):
    """One uninterrupted process: its result, its trained weights and the weights it started from."""

    result: LoopResult
    weights: dict[str, torch.Tensor]
    init: dict[str, torch.Tensor]


def _config(method: Method = "lora", strategy: StrategyName = "ddp", *, max_grad_norm: float = 2.0) -> LoopConfig:
    hp = Hyperparameters(
        epochs=4,
        learning_rate=3e-3,
        global_batch_size=GLOBAL_BATCH,
        micro_batch_size=1,  # 2 workers: 2 accumulated micro-batches each; 1 process: 4
        warmup_ratio=0.25,
        lr_scheduler="cosine",
        max_grad_norm=max_grad_norm,
        seed=0,
    )
    return LoopConfig(
        method=method,
        strategy=strategy,
        lora=LoRASpec(rank=8, alpha=16, dropout=0.0) if method == "lora" else None,
        hyperparameters=hp,
        checkpoint_every_steps=1000,
    )


def _one_process(base: Path, tok: Any, train: list[Unit], method: Method, *, max_grad_norm: float = 2.0) -> Reference:
    cfg = _config(method, max_grad_norm=max_grad_norm)
    model = build_model(base, method, cfg.lora, seed=0)
    init = {k: v.detach().clone() for k, v in trainable_state_dict(model).items()}
    result = run_loop(model, train, [], cfg, pad_id=tok.pad_token_id)
    return Reference(result, trainable_state_dict(model), init)


@pytest.fixture(scope="module")
def reference(base: Path, tok: Any, train: list[Unit]) -> Reference:
    """One process, no sharding, no interruption."""
    return _one_process(base, tok, train, "lora")


@pytest.fixture(scope="module")
def full_reference(base: Path, tok: Any, train: list[Unit]) -> Reference:
    """The same for a full fine-tune."""
    return _one_process(base, tok, train, "full")


def _workers(
    tmp_path_factory: pytest.TempPathFactory,
    world: int,
    base: Path,
    tok: Any,
    train: list[Unit],
    *,
    jobs: dict[str, Job],
) -> Path:
    out = tmp_path_factory.mktemp(f"workers{world}")
    run_workers(world, base, units=(train, tok.pad_token_id), jobs=jobs, out=out)
    return out


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory: pytest.TempPathFactory, base: Path, tok: Any, train: list[Unit]) -> Path:
    """2 workers: ``fsdp/`` (LoRA) and ``fsdp-full/`` (full fine-tune), each stopped at step 3 and resumed."""
    jobs = {
        "fsdp": Job(_config("lora", "fsdp"), stop=STOP),
        "fsdp-full": Job(_config("full", "fsdp"), stop=STOP),
    }
    return _workers(tmp_path_factory, 2, base, tok, train, jobs=jobs)


@pytest.fixture(scope="module")
def fsdp_run(fsdp_runs: Path) -> Path:
    return fsdp_runs / "fsdp"


@pytest.fixture(scope="module")
def fsdp_one_worker(
    tmp_path_factory: pytest.TempPathFactory, base: Path, tok: Any, train: list[Unit], fsdp_runs: Path
) -> Path:
    """1 worker resumes the 2 workers' full fine-tune at step 3, stops at step 5 and resumes that to the end."""
    resume = fsdp_runs / "fsdp-full" / f"checkpoint_{STOP:08d}"
    jobs = {"full": Job(_config("full", "fsdp"), stop=RESHARD_STOP, resume=resume)}
    return _workers(tmp_path_factory, 1, base, tok, train, jobs=jobs) / "full"


def _as_older_checkpoint(ckpt: Path, dest: Path) -> dict[str, Any]:
    """``ckpt`` as Corral wrote fsdp checkpoints before: the full optimizer state in ``optimizer.pt``, no ``fsdp/``."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    shutil.copytree(ckpt, dest, ignore=shutil.ignore_patterns("fsdp"))
    dcp_to_torch_save(ckpt / "fsdp", dest / "dcp.pt")
    full: dict[str, Any] = torch.load(dest / "dcp.pt", weights_only=True)["optimizer"]
    (dest / "dcp.pt").unlink()
    torch.save(full, dest / "optimizer.pt")
    return full


@pytest.fixture(scope="module")
def fsdp_two_again(
    tmp_path_factory: pytest.TempPathFactory, base: Path, tok: Any, train: list[Unit], fsdp_one_worker: Path
) -> Path:
    """2 workers resume the 1 worker's step-5 checkpoint to the end: ``sharded/`` as written, ``older/`` converted."""
    ckpt = fsdp_one_worker / f"checkpoint_{RESHARD_STOP:08d}"
    older = tmp_path_factory.mktemp("older") / ckpt.name
    _as_older_checkpoint(ckpt, older)
    jobs = {
        "sharded": Job(_config("full", "fsdp"), resume=ckpt),
        "older": Job(_config("full", "fsdp"), resume=older),
    }
    return _workers(tmp_path_factory, 2, base, tok, train, jobs=jobs)


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
        # ZeRO-3 first: it loads partitioned in processes where DeepSpeed has not started yet (as a Ray worker does).
        names: list[StrategyName] = ["deepspeed-zero3", "deepspeed-zero2"]
        jobs = {name: Job(_config("lora", name), stop=STOP) for name in names}
        jobs["deepspeed-zero3-full"] = Job(_config("full", "deepspeed-zero3"), stop=STOP)
        return _workers(tmp_path_factory, 2, base, tok, train, jobs=jobs)


def _check_like_one_process(
    run: Path,
    reference: Reference,
    *,
    steps: tuple[int, ...] = (STOP, 8),
    start: int = 0,
) -> dict[str, Any]:
    """The runs of ``run`` (from step ``start``, stopping at ``steps``) trained what one uninterrupted process did."""
    ref, ref_weights, init = reference
    got = json.loads((run / "result.json").read_text(encoding="utf-8"))
    assert got["steps"] == list(steps) and got["total_steps"] == ref.total_steps == 8
    assert got["checkpoints"] == list(steps)  # the stop, then the resumed run's end
    assert got["part_final_weights"] == (len(steps) == 1)  # a stopped run did not finish: nothing gathered for output
    # Neither repeated nor skipped, and the same arithmetic as one process.
    assert got["consumed"] == ref.consumed[start * GLOBAL_BATCH :]
    assert got["losses"] == pytest.approx(ref.losses[start:], rel=2e-4)
    assert sum(ref.losses[-2:]) < sum(ref.losses[:2])
    weights = torch.load(run / "final.pt", weights_only=True)
    assert set(weights) == set(ref_weights)
    # Summed in another order than one process: bounded by the training update, not per element (see drift.py).
    assert_trained_alike(weights, ref_weights, init)
    return got


def test_the_drift_bound_tells_a_real_difference(base: Path, tok: Any, train: list[Unit], reference: Reference) -> None:
    """A gradient norm taken over one of two shards (as if clipping at 2.0 * sqrt(2)) is far outside the bound."""
    clipped = _one_process(base, tok, train, "lora", max_grad_norm=2.0 * 2**0.5)
    assert clipped.init.keys() == reference.init.keys()
    for key, value in clipped.init.items():
        assert torch.equal(value, reference.init[key])  # the same start: only the clipping differs
    changed = drift(clipped.weights, reference.weights, reference.init)
    assert changed.overall > 10 * DRIFT_BOUND, changed


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
    # The optimizer state stays sharded on disk (fsdp/), not gathered into optimizer.pt.
    assert ckpt.optimizer == {} and ckpt.engine_dir is not None
    assert sorted(p.name for p in ckpt.engine_dir.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert set(ckpt.model) == set(reference[1])


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_fsdp_full_finetune_writes_the_optimizer_state_per_rank(
    fsdp_runs: Path, full_reference: Any, tmp_path: Path
) -> None:
    run = fsdp_runs / "fsdp-full"
    got = _check_like_one_process(run, full_reference)
    assert got["layout"]["local_numel"] * 2 == got["layout"]["full_numel"]  # each rank holds half of the model
    name = f"checkpoint_{STOP:08d}"
    # Each rank wrote its own shard into its own folder; rank 0 added the metadata. Merged, they are one checkpoint.
    assert _names(run / "ranks/0" / name / "fsdp") == [".metadata", "__0_0.distcp"]
    assert _names(run / "ranks/1" / name / "fsdp") == ["__1_0.distcp"]
    assert _names(run / name / "fsdp") == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert not list(run.rglob("optimizer.pt"))  # no single file with the whole state, on any rank
    # Adam's two fp32 moments of every weight, about half on each rank.
    state_bytes = 2 * 4 * got["layout"]["full_numel"]
    for rank in (0, 1):
        size = (run / name / "fsdp" / f"__{rank}_0.distcp").stat().st_size
        assert 0.45 * state_bytes < size < 0.6 * state_bytes, (rank, size, state_bytes)
    # The shards hold the state of every weight of the model.
    ckpt = read_checkpoint(run / name)
    assert ckpt.optimizer == {} and ckpt.engine_dir is not None
    full = _as_older_checkpoint(run / name, tmp_path / "full")
    weights = full_reference[1]
    assert set(full["state"]) == set(weights)
    for key, value in weights.items():
        assert full["state"][key]["exp_avg"].shape == value.shape
        assert int(full["state"][key]["step"]) == STOP


def test_fsdp_resumes_on_fewer_workers(fsdp_one_worker: Path, full_reference: Any) -> None:
    # 2 workers' checkpoint at step 3 -> 1 worker to step 5 (its own checkpoint) -> 1 worker to the end.
    _check_like_one_process(fsdp_one_worker, full_reference, steps=(RESHARD_STOP, 8), start=STOP)
    ckpt = fsdp_one_worker / f"checkpoint_{RESHARD_STOP:08d}"
    assert _names(ckpt / "fsdp") == [".metadata", "__0_0.distcp"]
    assert read_checkpoint(ckpt).state["world_size"] == 1


def test_fsdp_resumes_on_more_workers(fsdp_two_again: Path, full_reference: Any) -> None:
    # 1 worker's checkpoint at step 5 -> 2 workers to the end.
    _check_like_one_process(fsdp_two_again / "sharded", full_reference, steps=(8,), start=RESHARD_STOP)


def test_an_fsdp_checkpoint_of_the_older_format_resumes(fsdp_two_again: Path, full_reference: Any) -> None:
    # optimizer.pt with the full state (as written before fsdp/ existed): every rank reads it, keeps its shard.
    _check_like_one_process(fsdp_two_again / "older", full_reference, steps=(8,), start=RESHARD_STOP)


def test_an_incomplete_fsdp_checkpoint_is_not_resumed(fsdp_runs: Path, tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "ckpt"
    shutil.copytree(fsdp_runs / "fsdp-full" / f"checkpoint_{STOP:08d}", ckpt_dir)
    (ckpt_dir / "fsdp/__1_0.distcp").unlink()  # rank 1's upload never arrived
    with pytest.raises(FileNotFoundError, match=r"lacks __1_0\.distcp of the 2 optimizer state files"):
        read_checkpoint(ckpt_dir)
    (ckpt_dir / "fsdp/.metadata").unlink()  # nor rank 0's
    with pytest.raises(FileNotFoundError, match=r"has no \.metadata"):
        read_checkpoint(ckpt_dir)
    shutil.rmtree(ckpt_dir / "fsdp")  # neither the sharded state nor an older optimizer.pt
    with pytest.raises(FileNotFoundError, match=r"optimizer\.pt"):
        read_checkpoint(ckpt_dir)


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
    _check_loaded(got["loaded"], stage=stage, adapter_numel=layout["full_numel"])
    # Rank 0 rebuilds the output model from the gathered weights after training: whole, not partitioned.
    assert got["rebuilt"] == {"zero3_loading_alive": False, "partitioned": 0, "holds_weights": True}
    ckpt_dir = run / f"checkpoint_{STOP:08d}"
    parts = sorted(p.name for p in (ckpt_dir / "deepspeed" / "state").glob("*optim_states.pt"))
    assert parts == ["zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    ckpt = read_checkpoint(ckpt_dir)
    assert ckpt.state["strategy"] == f"deepspeed-zero{stage}" and ckpt.optimizer == {}
    assert ckpt.engine_dir is not None and ckpt.engine_dir.is_dir()
    assert set(ckpt.model) == set(reference[1])  # model.pt: the full adapter, as for every strategy


def _check_loaded(loaded: list[dict[str, int]], *, stage: int, adapter_numel: int) -> None:
    """What each of the 2 ranks held right after ``build_model``: under ZeRO-3 half of every base weight.

    ``adapter_numel``: the LoRA adapter's size (created whole; ``deepspeed.initialize`` partitions
    it), 0 for a full fine-tune (the base weights are the trainable ones).
    """
    assert len(loaded) == 2
    kind = "frozen" if adapter_numel else "trainable"
    for rank in loaded:
        if adapter_numel:
            assert rank["trainable_local"] == rank["trainable_full"] == adapter_numel
        base, local = rank[f"{kind}_full"], rank[f"{kind}_local"]
        assert base > 1_000_000  # the tiny model's base weights (1.4M), not just the adapter (82k)
        if stage == 3:
            # Every base weight loaded inside zero.Init: a half partition (padded by at most 1 element) per rank;
            # nothing of the base materialised at full size.
            assert rank["partitioned"] > 0 and rank["data"] == adapter_numel, rank
            assert base <= 2 * local <= base + rank["partitioned"], rank
        else:
            assert rank["partitioned"] == 0 and local == base and rank["data"] == base + adapter_numel, rank
    if stage == 3:  # the two halves cover the base once
        assert loaded[0][f"{kind}_full"] <= loaded[0][f"{kind}_local"] + loaded[1][f"{kind}_local"]


def test_deepspeed_zero3_full_finetune_loads_partitioned_and_resumes(deepspeed_runs: Path, full_reference: Any) -> None:
    # The weights that train are the partitioned ones: the resumed model leaves them to DeepSpeed's checkpoint.
    run = deepspeed_runs / "deepspeed-zero3-full"
    got = _check_like_one_process(run, full_reference)
    assert got["layout"]["local_numel"] * 2 == got["layout"]["full_numel"]
    _check_loaded(got["loaded"], stage=3, adapter_numel=0)
    assert got["rebuilt"] == {"zero3_loading_alive": False, "partitioned": 0, "holds_weights": True}


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
    check_resumable(
        CheckpointData(model={}, optimizer={}, scheduler={}, state={**state, "strategy": "fsdp"}), "fsdp", 2
    )
    zero = CheckpointData(model={}, optimizer={}, scheduler={}, state={**state, "strategy": "deepspeed-zero3"})
    with pytest.raises(ValueError, match="optimizer partitions of 4 workers; this run has 2"):
        check_resumable(zero, "deepspeed-zero3", 2)
    cfg = _config()
    cfg.strategy = "fsdp"
    with pytest.raises(ValueError, match=r"strategy fsdp needs an initialised torch\.distributed process group"):
        run_loop(build_model(base, "lora", cfg.lora, seed=0), train, [], cfg, pad_id=tok.pad_token_id)


def test_loading_partitioned_refuses_what_it_cannot_do(base: Path) -> None:
    from corral.training._deepspeed import engine_config, zero3_load_config

    hp, cpu = _config().hyperparameters, torch.device("cpu")
    assert zero3_load_config("deepspeed-zero2", hp, world_size=2, device=cpu) is None  # only ZeRO-3 loads partitioned
    zero3 = zero3_load_config("deepspeed-zero3", hp, world_size=2, device=cpu)
    assert zero3 == engine_config("deepspeed-zero3", hp, world_size=2, device=cpu)
    with pytest.raises(ValueError, match="not a DeepSpeed strategy: 'fsdp'"):
        engine_config("fsdp", hp, world_size=2, device=cpu)
    zero2 = engine_config("deepspeed-zero2", hp, world_size=2, device=cpu)
    with pytest.raises(ValueError, match=r"needs a ZeRO stage 3 config \(zero_optimization\.stage=2\)"):
        build_model(base, "lora", LoRASpec(rank=4), zero3_config=zero2)
    with pytest.raises(ValueError, match=r"needs an initialised torch\.distributed process group"):
        build_model(base, "lora", LoRASpec(rank=4), zero3_config=zero3)
    with pytest.raises(ValueError, match="qlora cannot load under DeepSpeed ZeRO-3"):
        build_model(base, "qlora", LoRASpec(rank=4), zero3_config=zero3)
