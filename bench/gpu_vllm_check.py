"""Live check of engine ``vllm`` on a GPU machine (no internet needed): serve_config -> Ray Serve LLM.

Builds the tiny llama (``corral.models.tiny``, shipped weights) on local disk, makes a
``ModelDeployment`` with ``gpusPerReplica: 1`` (so ``auto`` picks ``vllm``), turns it into a
Serve config with :func:`corral.serving.serve_config`, deploys it to a local Ray Serve and
asks ``/v1/chat/completions`` and ``/v1/models`` through the official openai client.

Needs ``vllm`` installed next to ``ray[serve]`` (``ray.serve.llm`` refuses to import without
it). Run::

    OMP_NUM_THREADS=4 python bench/gpu_vllm_check.py [--timeout 480]

Exit status 0 and ``OK`` on the last line when the endpoint answered. The results go to
``$OUT/gpu_vllm_check.json`` when ``$OUT`` is set.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=480, help="seconds to wait for the app to run")
    args = parser.parse_args()
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        print(f"vllm is not installed here ({exc}); install ray[llm] on a CUDA machine first")
        return 2

    import openai
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    from corral.api.v1alpha1.modeldeployment import ModelDeployment
    from corral.models import tiny
    from corral.serving import ResolvedModel, serve_config, served_model_names

    report: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = tiny.build("llama", Path(tmp) / "tiny-llama")
        dep = ModelDeployment.model_validate(
            {
                "metadata": {"name": "gpucheck"},
                "spec": {
                    "model": {"name": "tiny-llama"},
                    "resources": {"gpusPerReplica": 1},
                    "maxContextLength": 1024,
                    "maxConcurrentSequences": 8,
                },
            }
        )
        config = serve_config([dep], lambda ref: ResolvedModel(uri=f"file://{path}"))
        llm = config["applications"][0]["args"]["llm_configs"][0]
        # Check-only settings for a 1M-parameter float32 model on a shared GPU (not part of serve_config).
        llm["engine_kwargs"].update({"dtype": "float16", "gpu_memory_utilization": 0.2, "enforce_eager": True})
        print(json.dumps(config, indent=1))
        report["config"] = config

        ray.init(include_dashboard=False)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        t0 = time.monotonic()
        _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))
        while True:
            status = serve.status().applications.get("default-gpucheck")
            if status is not None and status.status == "RUNNING":
                break
            if (status is not None and status.status == "DEPLOY_FAILED") or time.monotonic() - t0 > args.timeout:
                print(f"NOT RUNNING: {status}")
                report["error"] = str(status)
                _write(report)
                return 1
            time.sleep(2)
        report["deploy_s"] = round(time.monotonic() - t0, 1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/default/gpucheck/v1", api_key="unused", max_retries=0)
        names = [m.id for m in client.models.list().data]
        out = client.chat.completions.create(
            model=served_model_names(dep)[0],
            messages=[{"role": "user", "content": "What is a Python list?"}],
            temperature=0,
            max_tokens=32,
        )
        report.update({"models": names, "answer": out.choices[0].message.content, "usage": out.usage.model_dump()})
        print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=1))
        serve.shutdown()
        ray.shutdown()
    _write(report)
    print("OK")
    return 0


def _write(report: dict[str, object]) -> None:
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_vllm_check.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    raise SystemExit(main())
