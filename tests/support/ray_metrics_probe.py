"""Run in a subprocess: record every serving metric through Ray's metrics API inside an actor,
then print Ray's own Prometheus exposition (what a Serve replica's metrics look like when
scraped). A fresh Ray is started with a known metrics export port, so the session Ray of the
test process is not touched.
"""

from __future__ import annotations

import socket
import sys
import time
import urllib.request


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    import ray

    port = _free_port()
    ray.init(num_cpus=1, include_dashboard=False, _metrics_export_port=port, log_to_driver=False)

    @ray.remote
    class Replica:
        def __init__(self) -> None:
            from corral.serving._metrics import ServingMetrics

            self.metrics = ServingMetrics("tiny", backend="ray")

        def serve_some(self) -> None:
            m = self.metrics
            m.request_started("billing")
            m.request_finished("billing", ttft=0.2, tpot=0.03, output_tokens=12, prompt_tokens=20, duration=0.6)
            m.request_started(None)
            m.error(None, 404)
            m.request_finished(None, ttft=None, tpot=None, output_tokens=0)
            m.adapter_loaded("billing", 0.05)
            m.adapter_evicted("billing")
            m.replica_started({"imports": 2.5, "model_load": 0.4, "warmup": 0.1})
            m.request_held(7.5)

    replica = Replica.remote()  # type: ignore[attr-defined]
    ray.get(replica.serve_some.remote())
    deadline = time.monotonic() + 90
    text = ""
    while time.monotonic() < deadline:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            text = ""
        if all(
            f"ray_corral_serving_{name}" in text
            for name in ("adapter_evictions_total", "errors_total", "replica_startup_seconds", "request_hold_seconds")
        ):
            break
        time.sleep(1.0)
    sys.stdout.write(text)
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
