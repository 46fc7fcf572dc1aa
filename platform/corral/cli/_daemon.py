"""The process ``corral up`` starts in the background: the embedded control plane until SIGTERM.

Run as ``python -m corral.cli._daemon --data-dir DIR --port PORT``. It writes
``DIR/endpoints.json`` (where the API, Serve, the Ray dashboard and metrics are) once it is
up, logs to ``DIR/corral.log``, and on SIGTERM/SIGINT stops what it started and removes
``DIR/corral.pid`` and ``DIR/endpoints.json``. It runs with umask 077: the state database,
the log, uploads, job folders and checkpoints under ``DIR`` are 0600/0700.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from pathlib import Path

__all__ = ["main"]

logger = logging.getLogger("corral.daemon")


def main(argv: list[str] | None = None) -> int:
    """Run the embedded control plane until a termination signal arrives."""
    parser = argparse.ArgumentParser(prog="corral-daemon")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--num-cpus", type=int, default=None)
    args = parser.parse_args(argv)
    os.umask(0o077)  # everything this process and its children (Ray, training) write is private
    data_dir: Path = args.data_dir
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.FileHandler(data_dir / "corral.log")],
    )
    from corral.control import EmbeddedControlPlane

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    plane = EmbeddedControlPlane(
        data_dir,
        ray_address=os.environ.get("RAY_ADDRESS") or None,
        host=args.host,
        port=args.port,
        num_cpus=args.num_cpus,
    )
    endpoints = data_dir / "endpoints.json"
    try:
        plane.start()
        driver = plane.driver
        info = {
            "pid": os.getpid(),
            "api": f"http://{args.host}:{args.port}",
            "metrics": f"http://{args.host}:{args.port}/metrics",
            "serve": driver.endpoint(),
            "dashboard": getattr(driver, "address", None),
        }
        tmp = endpoints.with_suffix(".tmp")
        tmp.write_text(json.dumps(info), encoding="utf-8")
        tmp.replace(endpoints)
        logger.info("Corral is up: %s", info)
        stop.wait()
    except Exception:
        logger.exception("Corral control plane failed")
        return 1
    finally:
        endpoints.unlink(missing_ok=True)
        plane.stop()
        (data_dir / "corral.pid").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
