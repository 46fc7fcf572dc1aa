"""The process ``corral up`` starts in the background: the embedded control plane until SIGTERM.

Run as ``python -m corral.cli._daemon --data-dir DIR --port PORT [--serve-port PORT]``.
It first takes the home's exclusive lock (``DIR/corral.lock``, held until it exits; exit
code 3 when another daemon holds it) and writes its pid record (``DIR/corral.pid``: PID,
start time, command line). It writes ``DIR/endpoints.json`` (where the API, Serve, the Ray
dashboard and metrics are) once it is up, logs to ``DIR/corral.log``, and on SIGTERM/SIGINT
stops what it started and removes ``DIR/corral.pid`` and ``DIR/endpoints.json``.

When it was killed (``kill -9``) instead, its Ray head goes on running, recorded in
``DIR/ray-head.json``: the next daemon re-attaches to it (see :mod:`corral.drivers`). It runs with umask 077:
the state database, the log, uploads, job folders and checkpoints under ``DIR`` are 0600/0700.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from pathlib import Path

from corral.embedded import EmbeddedControlPlane

from ._home import DaemonRecord, HomeLock

__all__ = ["EXIT_LOCKED", "main"]

logger = logging.getLogger("corral.daemon")

EXIT_LOCKED = 3
"""Exit code when another daemon holds the home's lock."""


def main(argv: list[str] | None = None) -> int:
    """Run the embedded control plane until a termination signal arrives."""
    parser = argparse.ArgumentParser(prog="corral-daemon")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--serve-port", type=int, default=None)
    parser.add_argument("--num-cpus", type=int, default=None)
    args = parser.parse_args(argv)
    os.umask(0o077)  # everything this process and its children (Ray, training) write is private
    data_dir: Path = args.data_dir.resolve()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.FileHandler(data_dir / "corral.log")],
    )
    lock = HomeLock(data_dir)
    if not lock.acquire():
        logger.error("Another Corral daemon holds %s; not starting a second one", lock.path)
        return EXIT_LOCKED
    me = DaemonRecord.of_self()
    me.write(data_dir)
    logger.info("Daemon %d holds %s", me.pid, lock.path)
    try:
        return _run(args, data_dir)
    finally:
        if DaemonRecord.read(data_dir) == me:
            (data_dir / "corral.pid").unlink(missing_ok=True)
        lock.release()


def _run(args: argparse.Namespace, data_dir: Path) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    plane = EmbeddedControlPlane(
        data_dir,
        ray_address=os.environ.get("RAY_ADDRESS") or None,
        host=args.host,
        port=args.port,
        serve_port=args.serve_port,
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
        if getattr(driver, "adopted", False):
            info["rayHead"] = "re-attached"
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
