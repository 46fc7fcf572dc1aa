"""Each namespace's data is read with its own credentials: a real S3 (moto) that only team-a can reach.

The server's own S3 chain points at a closed port, so a Dataset or Model on ``s3://`` is read
only when its namespace has settings of its own (``ControlSettings.namespace_artifacts``,
from ``<data dir>/namespace-artifacts.yaml`` on the embedded default).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from corral.api.v1alpha1 import Dataset, Model
from corral.artifacts import ArtifactSettings, load_namespace_settings
from corral.control import ControlSettings, Runner
from corral.drivers import FakeDriver
from corral.store import SqliteStore

RECORD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_each_namespace_reads_with_its_own_credentials(
    moto_s3: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{_closed_port()}")  # the server's own: nowhere
    client = moto_s3.client()
    client.put_object(Bucket=s3_bucket, Key="team-a/data.jsonl", Body=(json.dumps(RECORD) + "\n").encode())
    client.put_object(Bucket=s3_bucket, Key="team-a/model/config.json", Body=b'{"model_type": "llama"}')
    credentials = tmp_path / "namespace-artifacts.yaml"
    credentials.write_text(
        f"namespaces:\n  team-a:\n    s3_endpoint_url: {moto_s3.endpoint_url}\n    s3_max_attempts: 1\n"
        "    s3_access_key_id: team-a-key\n    s3_secret_access_key: team-a-secret\n"
    )
    namespace_artifacts = load_namespace_settings(credentials)
    assert namespace_artifacts["team-a"].s3_endpoint_url == moto_s3.endpoint_url
    assert "team-a-secret" not in repr(namespace_artifacts)
    store = SqliteStore(tmp_path / "state.db")
    for ns in ("team-a", "team-b"):
        store.create(
            Dataset.model_validate(
                {
                    "metadata": {"name": "d", "namespace": ns},
                    "spec": {
                        "uri": f"s3://{s3_bucket}/team-a/data.jsonl",
                        "license": {"name": "x", "commercialUse": "allowed"},
                    },
                }
            )
        )
        store.create(
            Model.model_validate(
                {
                    "metadata": {"name": "m", "namespace": ns},
                    "spec": {"uri": f"s3://{s3_bucket}/team-a/model", "license": {"name": "x"}},
                }
            )
        )
    settings = ControlSettings(
        artifact_root=(tmp_path / "artifacts").as_uri(),
        namespace_artifacts={**namespace_artifacts, "team-b": ArtifactSettings(s3_max_attempts=1)},
    )
    Runner(store, FakeDriver(), settings).run_once()

    def ready(kind: type[Any], ns: str) -> Any:
        return next(c for c in store.get(kind, ns, kind.__name__[0].lower()).status.conditions if c.type == "Ready")

    assert ready(Dataset, "team-a").status == "True", ready(Dataset, "team-a").message
    assert ready(Model, "team-a").status == "True", ready(Model, "team-a").message
    # team-b names the same objects, but its settings (and the server's) cannot reach that S3
    assert ready(Dataset, "team-b").status == "False" and ready(Dataset, "team-b").reason == "DataUnreadable"
    assert ready(Model, "team-b").status == "False"
    store.close()
