"""``corral catalog`` and ``corral lineage`` on the real catalog."""

import json

from typer.testing import CliRunner

from corral.cli import app


def test_catalog_lists_source_table_models() -> None:
    result = CliRunner().invoke(app, ["catalog", "--json"])
    assert result.exit_code == 0
    names = {entry["name"] for entry in json.loads(result.output)}
    assert {"llama-7b", "alpaca-7b", "vicuna-13b", "dolly-v2-12b", "chatglm-6b", "tiny-llama"} <= names


def test_lineage_refuses_commercial_alpaca_with_exit_1() -> None:
    result = CliRunner().invoke(app, ["lineage", "alpaca-7b", "--output", "bot", "--intended-use", "commercial"])
    assert result.exit_code == 1
    assert "REFUSED (LicenseForbidsCommercialUse)" in result.output
    assert "llama-7b" in result.output


def test_lineage_reports_llama3_conditions_and_share_alike() -> None:
    result = CliRunner().invoke(
        app, ["lineage", "llama-3.1-8b", "-d", "databricks-dolly-15k", "--intended-use", "commercial", "--json"]
    )
    assert result.exit_code == 0
    decision = json.loads(result.output)["decision"]
    assert decision["allowed"] and decision["reason"] == "LicenseConditions"
    text = " ".join(decision["conditions"])
    assert "700 million monthly active users" in text and "share-alike" in text


def test_lineage_rejects_unknown_use_and_model() -> None:
    assert CliRunner().invoke(app, ["lineage", "llama-7b", "--intended-use", "profit"]).exit_code == 2
    result = CliRunner().invoke(app, ["lineage", "llama-8b"])
    assert result.exit_code == 2 and "llama" in result.output
