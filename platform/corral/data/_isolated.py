"""Check a dataset in a child process with a memory cap, so a large or hostile file cannot grow the server.

:func:`check_dataset` holds every example of a file while it measures it; in the control
API that memory would be the server's. :func:`check_dataset_isolated` runs the same check
in ``python -m corral.data._isolated`` under ``RLIMIT_AS`` and a timeout, and returns the
facts the callers use (:class:`CheckedData`). The server's memory stays flat whatever the
file holds; a file that needs more than the cap is reported as too large to check.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from corral.data import _report

__all__ = ["CheckedData", "DataCheckFailed", "check_dataset_isolated"]

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BYTES = 2 * 1024 * 1024 * 1024
"""Address space the child may use (Python, the formats and the examples of the file)."""
DEFAULT_TIMEOUT = 600.0


class DataCheckFailed(ValueError):  # noqa: N818 - reads as what happened
    """The data could not be checked (unreadable, unknown format, over the memory or time cap)."""


@dataclass(frozen=True)
class CheckedData:
    """What a dataset check found (the parts the control API and the reconciler use).

    Attributes:
        ok: True when training may use the data.
        format: The format read.
        token_unit: ``words`` or ``tokens``.
        sha256: SHA-256 of the file.
        records: Records read.
        invalid: Records with an error.
        examples: Valid examples.
        first_errors: ``(line, message)`` of the first errors.
        error_count: How many errors in all.
        status: The report in the ``Dataset`` status form (wire dict).
    """

    ok: bool
    format: str
    token_unit: str
    sha256: str
    records: int
    invalid: int
    examples: int
    first_errors: tuple[tuple[int, str], ...]
    error_count: int
    status: dict[str, Any]


def _summarize(source: str, fmt: str, max_seq_len: int, over_length: str) -> dict[str, Any]:
    report = _report.check_dataset(source, format=fmt, max_seq_len=max_seq_len, over_length=over_length)  # type: ignore[arg-type]
    return {
        "ok": report.ok,
        "format": report.format,
        "token_unit": report.token_unit,
        "sha256": report.train.sha256,
        "records": report.train.records,
        "invalid": report.train.invalid,
        "examples": report.train.examples,
        "first_errors": [(e.line, e.message) for e in report.errors[:10]],
        "error_count": len(report.errors),
        "status": report.to_status().model_dump(mode="json", by_alias=True),
    }


def _limit_memory(limit: int) -> None:  # pragma: no cover - runs in the child
    """Cap the child's address space (set by the child itself: no ``preexec_fn`` in a threaded server)."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def check_dataset_isolated(
    source: str,
    *,
    format: str = "auto",
    max_seq_len: int = 2048,
    over_length: str = "truncate",
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    timeout: float = DEFAULT_TIMEOUT,
) -> CheckedData:
    """Run :func:`corral.data.check_dataset` (no tokenizer) on ``source`` in a capped child process.

    Raises:
        DataCheckFailed: The file cannot be read or its format told (the child's message),
            or the check needed more than ``memory_bytes`` or ``timeout``.
    """
    request = json.dumps(
        {
            "source": source,
            "format": format,
            "max_seq_len": max_seq_len,
            "over_length": over_length,
            "memory_bytes": memory_bytes,
        }
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "corral.data._isolated"],
            input=request.encode(),
            capture_output=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DataCheckFailed(f"the data could not be checked within {timeout:.0f} s") from None
    lines = done.stdout.decode("utf-8", errors="replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if done.returncode != 0 or "result" not in answer:
        error = answer.get("error")
        if error is None:
            tail = done.stderr.decode("utf-8", errors="replace").strip().splitlines()[-1:] or ["no output"]
            log.warning("Data check of %s failed (exit %s): %s", source, done.returncode, tail[0][:300])
            error = (
                f"the data could not be checked within the memory limit of {memory_bytes // (1024 * 1024)} MiB"
                if "MemoryError" in done.stderr.decode("utf-8", errors="replace")
                else "the data could not be checked"
            )
        raise DataCheckFailed(str(error))
    result = answer["result"]
    return CheckedData(
        ok=bool(result["ok"]),
        format=str(result["format"]),
        token_unit=str(result["token_unit"]),
        sha256=str(result["sha256"]),
        records=int(result["records"]),
        invalid=int(result["invalid"]),
        examples=int(result["examples"]),
        first_errors=tuple((int(line), str(message)) for line, message in result["first_errors"]),
        error_count=int(result["error_count"]),
        status=dict(result["status"]),
    )


def _main() -> int:  # pragma: no cover - runs in the child
    request = json.loads(sys.stdin.read())
    _limit_memory(int(request["memory_bytes"]))
    try:
        result = _summarize(request["source"], request["format"], request["max_seq_len"], request["over_length"])
    except MemoryError:
        print(json.dumps({"error": "the data needs more memory than the check may use"}))
        return 1
    except (OSError, ValueError) as exc:  # FormatDetectionError and TemplateError are ValueErrors
        print(json.dumps({"error": str(exc)[:2000]}))
        return 1
    print(json.dumps({"result": result}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
