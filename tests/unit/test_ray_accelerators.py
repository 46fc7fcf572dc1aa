"""Corral's accelerator types in Ray's naming: one mapping for training, serving and KubeRay pods."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray.util.accelerators.accelerators as ray_accelerators

from corral.api.v1alpha1.modeldeployment import ModelDeployment
from corral.scheduler import ACCELERATORS, ray_accelerator_type
from corral.serving import ResolvedModel, serve_config
from corral.training import TrainingJob
from corral.training._trainer import build_trainer

RAY_NAMES = {v for k, v in vars(ray_accelerators).items() if k.isupper() and isinstance(v, str)}


@pytest.mark.parametrize("name", sorted(n for n in ACCELERATORS if n != "cpu"))
def test_every_known_gpu_has_a_name_ray_knows(name: str) -> None:
    assert ray_accelerator_type(name) in RAY_NAMES


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nvidia-a100-80gb", "A100"),  # Ray detects "NVIDIA A100-SXM4-80GB" as A100: the memory suffix is dropped
        ("nvidia-tesla-t4", "T4"),  # GKE alias
        ("nvidia-h200-141gb", "H200"),
        ("nvidia-b200", "B200"),  # not in the table: Ray's own naming rule
        ("nvidia-rtx-pro-6000", "RTX-PRO-6000"),
        ("cpu", None),
        (None, None),
    ],
)
def test_names(name: str | None, expected: str | None) -> None:
    assert ray_accelerator_type(name) == expected
    if expected is not None:
        assert expected in RAY_NAMES


def test_serve_config_asks_ray_for_its_own_accelerator_name() -> None:
    dep = ModelDeployment.model_validate(
        {
            "metadata": {"name": "bot"},
            "spec": {
                "model": {"name": "tiny"},
                "engine": "transformers",
                "resources": {"acceleratorType": "nvidia-l4"},
            },
        }
    )
    config = serve_config([dep], lambda ref: ResolvedModel(uri="file:///models/tiny"))
    (deployment,) = config["applications"][0]["deployments"]
    assert deployment["ray_actor_options"]["accelerator_type"] == "L4"


def test_training_scaling_config_uses_the_same_name(tmp_path: Path) -> None:
    job = TrainingJob.model_validate(
        {
            "name": "ft",
            "baseModel": {"name": "base", "uri": "file:///models/base", "license": "Apache-2.0"},
            "datasets": [{"name": "d", "uri": "file:///data/d.jsonl"}],
            "spec": {
                "baseModel": {"name": "base"},
                "datasets": [{"name": "d"}],
                "resources": {"workers": 2, "gpusPerWorker": 1, "acceleratorType": "nvidia-a100-80gb"},
            },
            "outputUri": f"file://{tmp_path}/out",
            "eventsUri": f"file://{tmp_path}/events.jsonl",
            "checkpointUri": f"file://{tmp_path}/ckpt",
        }
    )
    trainer = build_trainer(job, run_name="ft-test")
    assert trainer.scaling_config.accelerator_type == "A100"
