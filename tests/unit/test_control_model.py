"""The Model reconciler (artifact, size, sha256, lineage) and the Dataset reconciler."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from corral.api.v1alpha1 import (
    Condition,
    Dataset,
    DatasetSpec,
    LicenseSpec,
    LocalObjectReference,
    Model,
    ModelSpec,
)
from corral.api.v1alpha1.dataset import DatasetReport
from corral.control import (
    DATASETS_ANNOTATION,
    ArtifactProbe,
    ControlSettings,
    DatasetCheck,
    DatasetWorld,
    MaterializeModel,
    ModelWorld,
    RecordEvent,
    reconcile_dataset,
    reconcile_model,
)
from corral.control._observe import check_dataset_data, probe_artifact
from tests.support import objects

NOW = datetime(2025, 1, 1, tzinfo=UTC)
SETTINGS = ControlSettings(artifact_root="file:///srv/a")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


meta = partial(objects.meta, ns="ns", uid=None)


def ready(obj: Model | Dataset) -> Condition:
    return next(c for c in obj.status.conditions if c.type == "Ready")


def probe(uri: str, **kw: Any) -> ArtifactProbe:
    return ArtifactProbe(uri=uri, exists=True, size_bytes=100, sha256="a" * 64, **kw)


def test_tiny_catalog_model_is_materialized_then_ready() -> None:
    m = Model(metadata=meta("tiny"), spec=ModelSpec(catalog_name="tiny-llama"))
    uri = "file:///srv/a/catalog/tiny-llama"
    result = reconcile_model(m, ModelWorld(now=NOW, settings=SETTINGS, probe=ArtifactProbe(uri=uri, exists=False)))
    assert MaterializeModel(builtin="llama", uri=uri) in result.actions
    assert result.status.conditions[0].reason == "Materializing"
    m = m.model_copy(update={"status": result.status})
    result = reconcile_model(m, ModelWorld(now=NOW, settings=SETTINGS, probe=probe(uri)))
    m = m.model_copy(update={"status": result.status})
    assert ready(m).status == "True" and ready(m).reason == "ArtifactResolved"
    assert m.status.artifact is not None and m.status.artifact.uri == uri and m.status.artifact.sha256 == "a" * 64
    assert m.status.parameters == 1377408 and m.status.architecture == "llama" and m.status.chat_template == "chatml"
    assert m.status.lineage is not None and m.status.lineage.commercial_use == "allowed"
    assert [link.license for link in m.status.lineage.links] == ["Apache-2.0"]
    # status current: no probe, nothing changes, no second event
    again = reconcile_model(m, ModelWorld(now=NOW, settings=SETTINGS))
    assert again.status == m.status and again.actions == []


def test_unknown_catalog_name() -> None:
    m = Model(metadata=meta("x"), spec=ModelSpec(catalog_name="no-such-model"))
    result = reconcile_model(m, ModelWorld(now=NOW, settings=SETTINGS))
    assert result.status.conditions[0].reason == "CatalogModelNotFound"


def test_uri_model_without_license_forbids_commercial_use() -> None:
    m = Model(metadata=meta("mine"), spec=ModelSpec(uri="file:///w/mine"))
    result = reconcile_model(m, ModelWorld(now=NOW, settings=SETTINGS, probe=probe("file:///w/mine")))
    assert result.status.lineage is not None and result.status.lineage.commercial_use == "forbidden"


def test_missing_artifact() -> None:
    m = Model(metadata=meta("mine"), spec=ModelSpec(uri="file:///w/mine"))
    gone = ArtifactProbe(uri="file:///w/mine", exists=False, error="nothing stored at file:///w/mine")
    result = reconcile_model(m, ModelWorld(now=NOW, settings=SETTINGS, probe=gone))
    assert result.status.conditions[0].reason == "ArtifactNotFound"
    assert any(isinstance(a, RecordEvent) and a.type == "Warning" for a in result.actions)


def test_adapter_lineage_includes_base_and_training_data() -> None:
    base = Model(metadata=meta("tiny"), spec=ModelSpec(catalog_name="tiny-llama"))
    data = Dataset(
        metadata=meta("support"),
        spec=DatasetSpec(uri="file:///d.jsonl", license=LicenseSpec(name="CC-BY-NC-4.0", commercial_use="forbidden")),
    )
    adapter = Model(
        metadata=meta("bot", annotations={DATASETS_ANNOTATION: "support"}),
        spec=ModelSpec(type="adapter", uri="file:///srv/a/bot", base_model=LocalObjectReference(name="tiny")),
    )
    world = ModelWorld(
        now=NOW, settings=SETTINGS, models={"tiny": base}, datasets={"support": data}, probe=probe("file:///srv/a/bot")
    )
    result = reconcile_model(adapter, world)
    lineage = result.status.lineage
    assert lineage is not None
    assert [(link.kind, link.name, link.relation) for link in lineage.links] == [
        ("model", "tiny-llama", "base"),
        ("model", "bot", "adapter"),
        ("dataset", "support", "training-data"),
    ]
    assert lineage.commercial_use == "forbidden"
    orphan = reconcile_model(adapter, ModelWorld(now=NOW, settings=SETTINGS, probe=probe("file:///srv/a/bot")))
    assert orphan.status.conditions[0].reason == "BaseModelNotFound"


def test_probe_artifact_reads_size_sha_and_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 1024}))
    (tmp_path / "weights.bin").write_bytes(b"x" * 10)
    found = probe_artifact(tmp_path.as_uri())
    assert found.exists and found.size_bytes == 10 + len((tmp_path / "config.json").read_bytes())
    assert found.architecture == "llama" and found.context_length == 1024
    assert found.sha256 is not None and len(found.sha256) == 64
    assert probe_artifact(tmp_path.as_uri()).sha256 == found.sha256
    assert not probe_artifact((tmp_path / "nope").as_uri()).exists


# -- Dataset --------------------------------------------------------------------------


def dataset(uri: str) -> Dataset:
    return Dataset(metadata=meta("d"), spec=DatasetSpec(uri=uri, license=LicenseSpec(name="Apache-2.0")))


def test_valid_dataset_is_ready_with_report() -> None:
    d = dataset((FIXTURES / "dolly.jsonl").as_uri())
    check = check_dataset_data(d)
    assert check.ok and check.report is not None and check.report.examples > 0
    result = reconcile_dataset(d, DatasetWorld(now=NOW, check=check))
    d = d.model_copy(update={"status": result.status})
    assert ready(d).status == "True" and ready(d).reason == "Valid"
    assert d.status.format == "dolly" and d.status.observed_generation == 1
    assert [a.reason for a in result.actions if isinstance(a, RecordEvent)] == ["Valid"]
    again = reconcile_dataset(d, DatasetWorld(now=NOW, check=check))
    assert again.status == d.status and again.actions == []


def test_invalid_dataset_names_lines() -> None:
    d = dataset((FIXTURES / "errors.jsonl").as_uri())
    check = check_dataset_data(d)
    assert not check.ok
    result = reconcile_dataset(d, DatasetWorld(now=NOW, check=check))
    d = d.model_copy(update={"status": result.status})
    assert ready(d).status == "False" and ready(d).reason == "Invalid"
    assert "line" in ready(d).message
    assert d.status.report is not None and d.status.report.invalid > 0


def test_unreadable_dataset() -> None:
    d = dataset("file:///no/such/file.jsonl")
    check = check_dataset_data(d)
    assert check.error is not None
    result = reconcile_dataset(d, DatasetWorld(now=NOW, check=check))
    assert result.status.conditions[0].reason == "DataUnreadable"


def test_dataset_status_kept_without_a_check() -> None:
    d = dataset("file:///x.jsonl")
    check = DatasetCheck(ok=True, format="alpaca", report=DatasetReport(examples=3), summary="3 examples")
    d = d.model_copy(update={"status": reconcile_dataset(d, DatasetWorld(now=NOW, check=check)).status})
    assert reconcile_dataset(d, DatasetWorld(now=NOW)).status == d.status
