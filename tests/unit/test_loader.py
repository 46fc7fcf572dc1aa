"""Loading resource YAML: typed objects, and errors that name document, path, value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.api import DocumentError, load_documents, validate_source
from corral.api.v1alpha1 import FineTuneJob, GPUPool
from corral.cli import app
from tests.conftest import REPO

JOB = """\
apiVersion: corral.dev/v1alpha1
kind: FineTuneJob
metadata: {name: bot, namespace: team-a}
spec:
  baseModel: {name: tiny-llama}
  datasets: [{name: faq}]
"""


def test_multi_document_yaml_becomes_typed_objects() -> None:
    pool = (
        "apiVersion: corral.dev/v1alpha1\nkind: GPUPool\nmetadata: {name: p}\n"
        "spec: {acceleratorType: cpu, gpusPerNode: 0, maxNodes: 1}\n"
    )
    objects = load_documents(JOB + "---\n" + pool)
    assert [type(o) for o in objects] == [FineTuneJob, GPUPool]
    assert objects[0].metadata.namespace == "team-a"


def test_error_names_document_path_value_and_allowed() -> None:
    bad = JOB.replace("datasets: [{name: faq}]", "datasets: [{name: faq}]\n  method: sft\n  lora: {rank: 0, alfa: 2}")
    with pytest.raises(DocumentError) as info:
        load_documents("---\n" + JOB + "---\n" + bad)
    err = info.value
    text = str(err)
    assert err.index == 1 and "document 2 (FineTuneJob/bot)" in text
    assert "spec.method: 'sft': Input should be 'lora', 'qlora' or 'full'" in text
    assert "spec.lora.rank: 0: Input should be greater than or equal to 1" in text
    assert "spec.lora.alfa: 2: unknown field (allowed here: rank, alpha, dropout, targetModules)" in text
    assert len(err.problems) == 3


def test_missing_field_and_cross_field_errors() -> None:
    doc = JOB.replace("  baseModel: {name: tiny-llama}\n", "  method: full\n  lora: {rank: 4}\n")
    _, errors = validate_source(doc)
    text = str(errors[0])
    assert "spec.baseModel: required field is missing" in text


def test_unknown_kind_and_version_list_what_is_allowed() -> None:
    _, errors = validate_source("apiVersion: corral.dev/v1\nkind: Pod\nmetadata: {name: x}\n")
    text = str(errors[0])
    assert "apiVersion: 'corral.dev/v1': not served by Corral (allowed: corral.dev/v1alpha1)" in text
    assert "kind: 'Pod': not a Corral kind (allowed: Model, Dataset, FineTuneJob, ModelDeployment, GPUPool)" in text


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: corral.dev/v1alpha1\nkind: Model\nmetadata: {name: [x\n")
    _, errors = validate_source(path)
    assert str(path) in str(errors[0]) and "line 4" in str(errors[0])


def test_bad_metadata_name() -> None:
    _, errors = validate_source(JOB.replace("name: bot", "name: Bot_1"))
    assert "metadata.name: 'Bot_1': String should match pattern" in str(errors[0])


def test_directory_loads_every_yaml_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(JOB)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yml").write_text(JOB.replace("name: bot", "name: bot2"))
    (tmp_path / "notes.txt").write_text("not yaml")
    assert [o.metadata.name for o in load_documents(tmp_path)] == ["bot"]
    assert [o.metadata.name for o in load_documents(tmp_path, recursive=True)] == ["bot", "bot2"]


def test_cli_validate_accepts_examples_and_rejects_bad_files(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(
        app, ["validate", "-f", str(REPO / "examples/support-bot"), "-f", str(REPO / "examples/cluster")]
    )
    assert ok.exit_code == 0, ok.output
    assert "FineTuneJob/support-bot-v1 is valid" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(JOB + "  intendedUse: profit\n  suspend: maybe\n")
    result = runner.invoke(app, ["validate", "-f", str(REPO / "examples/cluster"), "-f", str(bad), "-f", "never.yaml"])
    assert result.exit_code == 1
    assert "spec.intendedUse: 'profit': Input should be 'research' or 'commercial'" in result.output
    assert "spec.suspend: 'maybe'" in result.output
    assert "never.yaml" not in result.output


DATASET = """\
apiVersion: corral.dev/v1alpha1
kind: Dataset
metadata: {name: faq, namespace: team-a}
spec:
  uri: URI
  license: {name: MIT, commercialUse: allowed}
"""


def test_relative_file_uri_resolves_against_the_yaml_folder(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "ds.yaml"
    path.write_text(DATASET.replace("URI", "file://./data/faq.jsonl"))
    [obj] = load_documents(path)
    assert obj.spec.uri == (tmp_path / "conf" / "data" / "faq.jsonl").as_uri()  # type: ignore[attr-defined]
    path.write_text(DATASET.replace("URI", "file://../faq.jsonl"))
    assert load_documents(path)[0].spec.uri == (tmp_path / "faq.jsonl").as_uri()  # type: ignore[attr-defined]


def test_other_relative_file_uris_are_refused_with_advice() -> None:
    _, errors = validate_source(DATASET.replace("URI", "file://data/faq.jsonl"))
    text = str(errors[0])
    assert "spec.uri" in text and "is not an absolute file:// URI" in text and "file://./relative/path" in text
    _, errors = validate_source(DATASET.replace("URI", "ftp://host/faq.jsonl"))
    assert "allowed: file:///absolute/path, s3://bucket/key, hf://org/name" in str(errors[0])


def test_a_kubectl_directory_skips_core_namespace_and_serviceaccount_but_not_other_core_kinds(tmp_path: Path) -> None:
    (tmp_path / "00-ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n")
    (tmp_path / "01-sa.yaml").write_text(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: corral-ray, namespace: team-a}\n"
    )
    (tmp_path / "30-job.yaml").write_text(JOB)
    objects, errors = validate_source(tmp_path)
    assert [o.kind for o in objects] == ["FineTuneJob"] and errors == []
    (tmp_path / "02-cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    _, errors = validate_source(tmp_path)
    assert len(errors) == 1 and "ConfigMap" in str(errors[0])
