"""What Ray Train costs on top of the same loop in plain PyTorch (CPU, tiny llama, LoRA).

Both paths run :func:`corral.training.run_loop` on the same model, data and settings, in
one process tree, one torch thread per worker:

* **plain**: build the model and data here, run the loop, write the final checkpoint (the
  same files the Ray path reports) and the output Model;
* **ray**: ``build_trainer(job).fit()`` on a local Ray (1 worker), the production path of
  ``python -m corral.training``, reading the step times from the job's events file.

The local Ray is started first, so every plain run has the same idle Ray beside it. Then
the runs alternate, ``plain, (ray, plain) x --rounds``, and medians are reported (the box
is shared and noisy). Reported:

* steady-state loop throughput: tokens/s between step ``--warmup`` and the last step, the
  same steps on both sides; the ratio ray/plain of the medians (goal: Ray costs at most
  10%, ratio >= 0.90);
* the fixed cost: seconds from ``fit()`` to the first step and from the last step to
  ``fit()`` returning, minus what the plain path spends on the same work (the first plain
  run's model build, data and first step, which pay the same imports a fresh worker pays;
  the median plain checkpoint + output). The first fit on a new Ray also starts Ray
  Train's detached autoscaling-coordinator actor, which later fits reuse: both are shown
  (``cold`` = first fit, what a job on a fresh local Ray pays; ``warm`` = median of the
  later fits, a job on a long-running Ray). Goal: at most half of the 22 s measured before
  these settings;
* where the Ray start-up goes: until the worker process starts (controller, helper actors,
  placement group), the worker's Ray start-up (imports, train context, process group), and
  the training function's own set-up (model, data).

Usage::

    OMP_NUM_THREADS=1 python bench/train_overhead.py [--epochs 12] [--pairs 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

RESULTS = Path(__file__).resolve().parent / "results" / "train_overhead.json"
BASELINE_FIXED_S = 22.0


def _write_data(path: Path, pairs: int) -> None:
    from corral.models.tiny._corpus import qa_facts

    with path.open("w", encoding="utf-8") as fh:
        for p in qa_facts(pairs, seed=11):
            msgs = [{"role": "user", "content": p.question}, {"role": "assistant", "content": p.answer}]
            fh.write(json.dumps({"messages": msgs}) + "\n")


def _job(root: Path, data: Path, epochs: int, tag: str) -> Any:
    from corral.training import TrainingJob

    return TrainingJob.model_validate(
        {
            "name": "bench",
            "baseModel": {"name": "tiny-llama", "builtin": "llama", "chatTemplate": "chatml", "license": "Apache-2.0"},
            "datasets": [{"name": "facts", "uri": str(data)}],
            "spec": {
                "baseModel": {"name": "tiny-llama"},
                "datasets": [{"name": "facts"}],
                "lora": {"rank": 16, "alpha": 32, "dropout": 0.0},
                "hyperparameters": {
                    "epochs": epochs,
                    "learningRate": 3e-3,
                    "globalBatchSize": 8,
                    "microBatchSize": 4,
                    "warmupRatio": 0.0,
                    "lrScheduler": "constant",
                    "maxSeqLen": 128,
                    "seed": 0,
                },
                "checkpointing": {"everySteps": 1000, "keep": 1},
            },
            "outputUri": f"file://{root}/out-{tag}",
            "eventsUri": f"file://{root}/events-{tag}.jsonl",
            "checkpointUri": f"file://{root}/ckpt",
            "runName": f"bench-{os.getpid()}-{tag}",
            "maxFailures": 0,
        }
    )


def _steady(times: list[tuple[int, float]], tokens_per_step: list[int], warmup: int) -> float:
    """Tokens per second between step ``warmup`` and the last step."""
    (s0, t0), (s1, t1) = times[warmup - 1], times[-1]
    return sum(tokens_per_step[s0:s1]) / (t1 - t0)


def run_plain(job: Any, root: Path) -> dict[str, Any]:
    """The loop without Ray: start-up, step times and tear-down (checkpoint + output)."""
    import torch
    from transformers import AutoTokenizer

    from corral.training import LoopCallbacks, ProgressEvent, build_model, run_loop, save_output
    from corral.training._ray import loop_config, materialize_base_model, prepare_job_data

    torch.set_num_threads(1)
    t_start = time.time()
    base = materialize_base_model(job.base_model, root / "plain-base")
    tok = AutoTokenizer.from_pretrained(base)
    data, name, template = prepare_job_data(job, tok)
    model = build_model(base, "lora", job.spec.effective_lora, seed=0)
    times: list[tuple[int, float]] = []
    ckpt_root = root / f"plain-ckpt-{job.run_name}"

    class _Plain(LoopCallbacks):
        def on_progress(self, event: ProgressEvent) -> None:
            times.append((event.step, time.time()))

        def on_checkpoint(self, step: int, write: Any, metrics: dict[str, Any]) -> None:
            write(ckpt_root / f"checkpoint_{step:08d}")  # what the Ray worker writes before reporting

    t_loop = time.time()
    result = run_loop(model, data.train, data.validation, loop_config(job), pad_id=tok.pad_token_id, callbacks=_Plain())
    save_output(model, tok, job, template_name=name, template=template, metrics=result.final_metrics)
    t_done = time.time()
    return {
        "times": times,
        "startup_s": t_loop - t_start,
        "first_step_s": times[0][1] - t_loop,
        "teardown_s": t_done - times[-1][1],
        "tokens_per_step": _tokens_per_step(data.train, job),
    }


def _tokens_per_step(units: list[Any], job: Any) -> list[int]:
    from corral.training import DataPosition
    from corral.training._sampling import _Plan

    plan = _Plan(len(units), job.spec.hyperparameters, 1)
    return [sum(len(units[u].input_ids) for u in step) for _, step in plan.steps_from(DataPosition())]


def run_ray(job: Any) -> dict[str, Any]:
    """The same job through ``TorchTrainer.fit()`` on the local Ray."""
    from corral.training import ProgressEvent, StartedEvent, build_trainer, read_events

    t0 = time.time()
    result = build_trainer(job).fit()
    t1 = time.time()
    if result.error is not None:
        raise RuntimeError(f"the Ray run failed: {result.error}")
    events = read_events(job.events_uri)
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    started = next(e for e in events if isinstance(e, StartedEvent))
    setup = started.setup_seconds or 0.0
    worker_start = started.worker_start_seconds or 0.0
    fit_to_loop = started.time - t0
    return {
        "times": [(e.step, e.time) for e in progress],
        "fit_to_first_step_s": progress[0].time - t0,
        "last_step_to_return_s": t1 - progress[-1].time,
        "phase_until_worker_process_s": fit_to_loop - setup - worker_start,
        "phase_worker_ray_startup_s": worker_start,
        "phase_worker_setup_s": setup,
    }


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    """Run both paths and print/write the comparison."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2, help="(ray, plain) pairs after the first plain run")
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the steady state")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.warmup < 1:
        ap.error(f"--rounds and --warmup must be >= 1 (got rounds={args.rounds}, warmup={args.warmup})")
    import ray

    from corral.training._trainer import RAY_TRAIN_ENV

    for key, value in RAY_TRAIN_ENV.items():  # before ray.init: the local Ray's processes inherit them
        os.environ.setdefault(key, value)
    load_before = os.getloadavg()
    ray.init(num_cpus=2, include_dashboard=False)
    plains: list[dict[str, Any]] = []
    rays: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
            root = Path(tmp)
            data = root / "facts.jsonl"
            _write_data(data, args.pairs)
            plains.append(run_plain(_job(root, data, args.epochs, "plain0"), root))
            for i in range(args.rounds):
                rays.append(run_ray(_job(root, data, args.epochs, f"ray{i}")))
                plains.append(run_plain(_job(root, data, args.epochs, f"plain{i + 1}"), root))
    finally:
        ray.shutdown()
    load_after = os.getloadavg()
    tps = plains[0]["tokens_per_step"]
    plain_runs = [_steady(p["times"], tps, args.warmup) for p in plains]
    ray_runs = [_steady(r["times"], tps, args.warmup) for r in rays]
    plain_tps, ray_tps = _median(plain_runs), _median(ray_runs)
    # The first plain run pays the imports of the model classes that a fresh Ray worker pays too.
    plain_to_first_step = plains[0]["startup_s"] + plains[0]["first_step_s"]
    plain_teardown = _median([p["teardown_s"] for p in plains])
    startup = [r["fit_to_first_step_s"] - plain_to_first_step for r in rays]
    teardown = [r["last_step_to_return_s"] - plain_teardown for r in rays]
    fixed = [s + t for s, t in zip(startup, teardown, strict=True)]

    def cold_warm(values: list[float]) -> tuple[float, float | None]:
        return round(values[0], 2), round(_median(values[1:]), 2) if len(values) > 1 else None

    out: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": 1, "python": sys.version.split()[0]},
        "workload": {
            "pairs": args.pairs,
            "epochs": args.epochs,
            "steps": len(tps),
            "steady_steps": len(tps) - args.warmup + 1,
            "global_batch": 8,
            "micro": 4,
            "order": "plain, (ray, plain) x rounds",
            "rounds": args.rounds,
        },
        "load_average_1_5_15_before": [round(x, 2) for x in load_before],
        "load_average_1_5_15_after": [round(x, 2) for x in load_after],
        "plain_tokens_per_s_runs": [round(x, 1) for x in plain_runs],
        "ray_tokens_per_s_runs": [round(x, 1) for x in ray_runs],
        "plain_tokens_per_s": round(plain_tps, 1),
        "ray_tokens_per_s": round(ray_tps, 1),
        "loop_ratio_ray_over_plain": round(ray_tps / plain_tps, 3),
        "loop_goal": ">= 0.90",
        "plain_startup_to_first_step_s": round(plain_to_first_step, 2),
        "plain_teardown_s": round(plain_teardown, 2),
        "ray_fit_to_first_step_s_runs": [round(r["fit_to_first_step_s"], 2) for r in rays],
        "ray_last_step_to_return_s_runs": [round(r["last_step_to_return_s"], 2) for r in rays],
        "ray_phase_until_worker_process_s_runs": [round(r["phase_until_worker_process_s"], 2) for r in rays],
        "ray_phase_worker_ray_startup_s_runs": [round(r["phase_worker_ray_startup_s"], 2) for r in rays],
        "ray_phase_worker_setup_s_runs": [round(r["phase_worker_setup_s"], 2) for r in rays],
        "fixed_overhead_startup_s_cold_warm": cold_warm(startup),
        "fixed_overhead_teardown_s_cold_warm": cold_warm(teardown),
        "fixed_overhead_s_cold_warm": cold_warm(fixed),
        "fixed_overhead_s": round(fixed[0], 2),
        "fixed_goal_s": f"<= {BASELINE_FIXED_S / 2:g} (half of {BASELINE_FIXED_S:g})",
    }
    print(f"{'metric':40} value")
    for key, value in out.items():
        if not isinstance(value, dict):
            print(f"{key:40} {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
