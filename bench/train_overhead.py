"""What Ray Train costs on top of the same loop in plain PyTorch (CPU, tiny llama, LoRA).

Both paths run :func:`corral.training.run_loop` on the same model, data and settings, in
one process tree, one torch thread per worker:

* **plain**: build the model and data here, run the loop, save the output;
* **ray**: ``build_trainer(job).fit()`` on a local Ray (1 worker), reading the step times
  from the job's events file.

Reported:

* steady-state loop throughput (tokens/s between step ``--warmup`` and the last step) and
  the ratio ray/plain (goal: Ray costs at most 10%, ratio >= 0.90);
* the fixed cost: seconds from ``fit()`` to the first step and from the last step to
  ``fit()`` returning, minus what the plain path spends on the same work (model build,
  data, output) - goal: at most half of the 22 s measured before these settings.

Usage::

    OMP_NUM_THREADS=1 python bench/train_overhead.py [--epochs 6] [--pairs 64]
"""

from __future__ import annotations

import argparse
import json
import os
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


def _job(root: Path, data: Path, epochs: int) -> Any:
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
            "outputUri": f"file://{root}/out",
            "eventsUri": f"file://{root}/events.jsonl",
            "checkpointUri": f"file://{root}/ckpt",
            "runName": f"bench-{os.getpid()}-{int(time.time())}",
            "maxFailures": 0,
        }
    )


def _steady(times: list[tuple[int, float]], tokens_per_step: list[int], warmup: int) -> float:
    """Tokens per second between step ``warmup`` and the last step."""
    (s0, t0), (s1, t1) = times[warmup - 1], times[-1]
    return sum(tokens_per_step[s0:s1]) / (t1 - t0)


def run_plain(job: Any, root: Path) -> dict[str, Any]:
    """The loop without Ray: returns start-up, loop and tear-down timings."""
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

    class _Times(LoopCallbacks):
        def on_progress(self, event: ProgressEvent) -> None:
            times.append((event.step, time.time()))

    t_loop = time.time()
    result = run_loop(model, data.train, data.validation, loop_config(job), pad_id=tok.pad_token_id, callbacks=_Times())
    t_end_loop = time.time()
    plain_job = job.model_copy(update={"output_uri": f"file://{root}/plain-out"})
    save_output(model, tok, plain_job, template_name=name, template=template, metrics=result.final_metrics)
    t_done = time.time()
    return {
        "times": times,
        "loop_start": t_loop,
        "startup_s": t_loop - t_start,
        "teardown_s": t_done - t_end_loop,
        "tokens_per_step": _tokens_per_step(data.train, job),
    }


def _tokens_per_step(units: list[Any], job: Any) -> list[int]:
    from corral.training import DataPosition
    from corral.training._loop import _Plan

    plan = _Plan(len(units), job.spec.hyperparameters, 1)
    return [sum(len(units[u].input_ids) for u in step) for _, step in plan.steps_from(DataPosition())]


def run_ray(job: Any) -> dict[str, Any]:
    """The same job through ``TorchTrainer.fit()`` on a local Ray."""
    import ray

    from corral.training import ProgressEvent, StartedEvent, build_trainer, read_events

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False)
    t0 = time.time()
    result = build_trainer(job).fit()
    t1 = time.time()
    if result.error is not None:
        raise RuntimeError(f"the Ray run failed: {result.error}")
    events = read_events(job.events_uri)
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    started = next(e for e in events if isinstance(e, StartedEvent))
    return {
        "times": [(e.step, e.time) for e in progress],
        "fit_to_loop_s": started.time - t0,
        "worker_setup_s": started.setup_seconds or 0.0,
        "fit_to_first_step_s": progress[0].time - t0,
        "last_step_to_return_s": t1 - progress[-1].time,
        "fit_s": t1 - t0,
    }


def main(argv: list[str] | None = None) -> int:
    """Run both paths and print/write the comparison."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the steady state")
    args = ap.parse_args(argv)
    from corral.training._ray import RAY_TRAIN_ENV

    for key, value in RAY_TRAIN_ENV.items():  # before ray.init: the local Ray's processes inherit them
        os.environ.setdefault(key, value)
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        root = Path(tmp)
        data = root / "facts.jsonl"
        _write_data(data, args.pairs)
        job = _job(root, data, args.epochs)
        load_before = os.getloadavg()[0]
        # plain, ray, plain: the two plain runs bracket the Ray run (the box is shared and noisy).
        plain = run_plain(job, root)
        ray_run = run_ray(job)
        plain_after = run_plain(job, root)
        load_after = os.getloadavg()[0]
    tps = plain["tokens_per_step"]
    plain_runs = [_steady(p["times"], tps, args.warmup) for p in (plain, plain_after)]
    plain_tps = sum(plain_runs) / 2
    ray_tps = _steady(ray_run["times"], tps, args.warmup)
    first_step_plain = plain["times"][0][1] - plain["loop_start"]
    startup_overhead = ray_run["fit_to_first_step_s"] - plain["startup_s"] - first_step_plain
    teardown_overhead = ray_run["last_step_to_return_s"] - plain["teardown_s"]
    fixed = startup_overhead + teardown_overhead
    out = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": 1, "python": sys.version.split()[0]},
        "workload": {"pairs": args.pairs, "epochs": args.epochs, "steps": len(tps), "global_batch": 8, "micro": 4},
        "load_average_before_after": [round(load_before, 2), round(load_after, 2)],
        "plain_tokens_per_s_runs": [round(x, 1) for x in plain_runs],
        "plain_tokens_per_s": round(plain_tps, 1),
        "ray_tokens_per_s": round(ray_tps, 1),
        "loop_ratio_ray_over_plain": round(ray_tps / plain_tps, 3),
        "loop_goal": ">= 0.90",
        "plain_startup_s": round(plain["startup_s"], 2),
        "plain_teardown_s": round(plain["teardown_s"], 2),
        "ray_fit_to_loop_s": round(ray_run["fit_to_loop_s"], 2),
        "ray_fit_to_first_step_s": round(ray_run["fit_to_first_step_s"], 2),
        "ray_worker_setup_s": round(ray_run["worker_setup_s"], 2),
        "ray_worker_group_start_s": round(ray_run["fit_to_loop_s"] - ray_run["worker_setup_s"], 2),
        "ray_last_step_to_return_s": round(ray_run["last_step_to_return_s"], 2),
        "ray_fit_s": round(ray_run["fit_s"], 2),
        "fixed_overhead_startup_s": round(startup_overhead, 2),
        "fixed_overhead_teardown_s": round(teardown_overhead, 2),
        "fixed_overhead_s": round(fixed, 2),
        "fixed_goal_s": f"<= {BASELINE_FIXED_S / 2:g} (half of {BASELINE_FIXED_S:g})",
    }
    print(f"{'metric':34} {'value':>16}")
    for key, value in out.items():
        if not isinstance(value, dict):
            print(f"{key:34} {value!s:>16}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
