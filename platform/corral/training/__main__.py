"""``python -m corral.training --job JOB.json``: the Ray job entrypoint (DESIGN.md contract 1).

Order of work, so that a bad job fails before any worker starts:

1. read and validate the job file (exit 2 when invalid);
2. validate every dataset with ``corral.data.load_dataset`` (exit 2 with the errors and
   their lines, and a ``failed`` event with reason ``DatasetInvalid``; a file that cannot be
   read at all, e.g. deleted after the Dataset was validated, is reason ``DataUnreadable``
   naming the Dataset and the file, also when it vanishes while training runs);
3. refuse what the cluster cannot run: qlora without CUDA/bitsandbytes, DeepSpeed or FSDP
   without GPUs, too few GPUs (exit 2, reason ``Unsupported``). The GPUs are asked of the Ray
   at ``RAY_ADDRESS``/``--ray-address``, or counted on this machine when a local Ray is to
   be started (then nothing is started for a refused job);
4. ``TorchTrainer.fit()``; exit 0 with a ``completed`` event, or 1 with ``failed``.

Running it again with the same job resumes from the newest checkpoint (``resume: auto``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from corral.artifacts import ArtifactError, parse_uri
from corral.data import DatasetInvalid
from corral.training._events import CompletedEvent, EventWriter, FailedEvent
from corral.training._job import load_job
from corral.training._preflight import preflight

__all__ = ["main"]

logger = logging.getLogger("corral.training")

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m corral.training", description="Run a Corral fine-tune on Ray Train.")
    ap.add_argument("--job", required=True, help="resolved job file (JSON)")
    ap.add_argument("--ray-address", default=None, help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    ap.add_argument("--log-level", default="INFO")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; return the process exit code."""
    args = _parse(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    try:
        job = load_job(args.job)
    except (OSError, ArtifactError, ValidationError) as exc:
        print(f"corral.training: invalid job file {args.job}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    events = EventWriter(job.events_uri)

    def refuse(reason: str, message: str) -> int:
        print(f"corral.training: job {job.namespace}/{job.name} refused ({reason}): {message}", file=sys.stderr)
        events.write(FailedEvent(reason=reason, message=message))
        return EXIT_REFUSED

    from corral.training._data import load_conversations  # lazy: torch, once OMP_NUM_THREADS is set and the job read

    sources = [*job.datasets, *([job.validation_dataset] if job.validation_dataset else [])]
    for d in sources:
        try:
            load_conversations([(d.uri, d.format)])
        except DatasetInvalid as exc:
            lines = [f"Dataset {d.name}: {exc}"]
            if exc.report is not None:
                lines += [f"  {e}" for e in exc.report.errors[:50]]
            return refuse("DatasetInvalid", "\n".join(lines))
        except (OSError, ArtifactError) as exc:
            return refuse("DataUnreadable", _unreadable_message(d.name, d.uri, exc))

    import ray
    import torch

    from corral.training._trainer import RAY_TRAIN_ENV, build_trainer  # lazy: Ray Train, after the refusals above

    for key, value in RAY_TRAIN_ENV.items():
        os.environ.setdefault(key, value)
    address = args.ray_address or os.environ.get("RAY_ADDRESS")
    if address is None and not ray.is_initialized():
        # A local Ray will be started: it has exactly the GPUs this machine has.
        cluster_gpus = float(torch.cuda.device_count())
    else:
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False)
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0))  # type: ignore[no-untyped-call]
    reasons = preflight(
        job.spec,
        cluster_gpus=cluster_gpus,
        cuda_available=cluster_gpus > 0,
    )
    if reasons:
        return refuse("Unsupported", "; ".join(reasons))
    if not ray.is_initialized():
        ray.init(include_dashboard=False)

    try:
        result = build_trainer(job).fit()
    except Exception as exc:  # Ray raises TrainingFailedError (and others) from fit()
        logger.exception("training failed")
        gone = next((d for d in sources if _missing(d.uri)), None)
        if gone is not None:  # the data vanished while training ran: say so, not Ray's traceback
            events.write(FailedEvent(reason="DataUnreadable", message=_unreadable_message(gone.name, gone.uri, exc)))
            return EXIT_FAILED
        events.write(FailedEvent(reason="TrainingFailed", message=f"{type(exc).__name__}: {exc}"))
        return EXIT_FAILED
    metrics_out = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, int | float) or v is None}
    step = int(metrics_out.get("step") or 0)
    if step < int(metrics_out.get("total_steps") or 0):
        events.write(FailedEvent(reason="TrainingFailed", message=f"training stopped at step {step}"))
        return EXIT_FAILED
    events.write(
        CompletedEvent(
            step=step,
            output_uri=job.output_uri,
            metrics={k: (float(v) if v is not None else None) for k, v in metrics_out.items()},
        )
    )
    logger.info("job %s/%s completed: %s", job.namespace, job.name, job.output_uri)
    return EXIT_OK


def _unreadable_message(name: str, uri: str, exc: BaseException) -> str:
    detail = "the file does not exist" if _missing(uri) else f"{type(exc).__name__}: {exc}"
    return f"Dataset {name}: cannot read {uri}: {detail}"


def _missing(uri: str) -> bool:
    """True when a local (``file://`` or path) data file does not exist."""
    try:
        parsed = parse_uri(uri)
    except ValueError:
        return False
    return parsed.scheme == "file" and not os.path.exists(parsed.path)


if __name__ == "__main__":
    sys.exit(main())
