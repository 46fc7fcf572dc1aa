"""Tests for corral.catalog's license lineage and commercial-use policy."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from corral.catalog import (
    DatasetSource,
    LicenseInfo,
    LicensePolicyError,
    LineageLink,
    ModelSource,
    UnknownModelError,
    check_policy,
    enforce_policy,
    license_info,
    lineage,
)

CC_BY_NC = LicenseInfo(license="CC-BY-NC-4.0", commercial_use="forbidden")


def test_alpaca_finetune_chain_root_first() -> None:
    chain = lineage("alpaca-7b", output="support-bot", output_relation="adapter")
    assert [(link.name, link.relation) for link in chain.links] == [
        ("llama-7b", "base"),
        ("alpaca-7b", "derived"),
        ("support-bot", "adapter"),
    ]
    assert chain.links[1].derived_from == "llama-7b"
    assert chain.links[2].derived_from == "alpaca-7b"
    assert chain.root.name == "llama-7b"
    assert chain.commercial_use == "forbidden"


def test_alpaca_finetune_refused_for_commercial_use() -> None:
    chain = lineage("alpaca-7b", output="support-bot")
    decision = check_policy(chain, "commercial")
    assert not decision.allowed
    assert decision.reason == "LicenseForbidsCommercialUse"
    assert "alpaca-7b (derived from llama-7b" in decision.message
    assert "llama-7b (license: LLaMA non-commercial research license) forbids commercial use" in decision.message
    assert decision.offending == ["alpaca-7b", "llama-7b"]
    with pytest.raises(LicensePolicyError, match="LLaMA non-commercial research license") as info:
        enforce_policy(chain, "commercial")
    assert isinstance(info.value, ValueError)
    assert info.value.decision == decision


def test_alpaca_finetune_allowed_for_research() -> None:
    chain = lineage("alpaca-7b", output="support-bot")
    decision = enforce_policy(chain, "research")
    assert decision.allowed
    assert decision.reason == "ResearchOnly"
    assert "llama-7b" in decision.message


@pytest.mark.parametrize("name", ["vicuna-13b", "koala-13b", "llama-65b", "glm-130b"])
def test_non_commercial_models_refused(name: str) -> None:
    assert not check_policy(lineage(name), "commercial").allowed


def test_dolly_allowed_and_share_alike_data_noted() -> None:
    plain = check_policy(lineage("dolly-v2-12b"), "commercial")
    assert plain.allowed and plain.reason == "Allowed"
    assert "pythia-12b" in plain.message and "MIT" in plain.message

    chain = lineage("dolly-v2-12b", datasets=["databricks-dolly-15k"], output="dolly-bot")
    assert [link.name for link in chain.links] == ["pythia-12b", "dolly-v2-12b", "dolly-bot", "databricks-dolly-15k"]
    assert chain.links[-1].relation == "training-data"
    assert chain.commercial_use == "allowed"
    assert chain.share_alike
    assert any("databricks-dolly-15k" in note and "ShareAlike" in note for note in chain.share_alike_notes)
    decision = check_policy(chain, "commercial")
    assert decision.allowed
    assert decision.reason == "LicenseConditions"
    assert any("share-alike" in c for c in decision.conditions)


def test_llama31_conditional_reports_naming_rule_and_mau_clause() -> None:
    chain = lineage("llama-3.1-8b", output="llama-support", output_relation="finetune")
    assert chain.commercial_use == "conditional"
    decision = enforce_policy(chain, "commercial")
    assert decision.allowed
    assert decision.reason == "LicenseConditions"
    naming = [c for c in decision.conditions if 'beginning with "Llama"' in c]
    mau = [c for c in decision.conditions if "700 million monthly active users" in c]
    assert naming and mau
    assert all(c.startswith("llama-3.1-8b (Llama 3.1 Community License): ") for c in decision.conditions)
    assert "700 million" in decision.message


def test_conditions_deduplicated_across_links() -> None:
    adapter = ModelSource(
        name="my-llama",
        license=license_info("llama3.1"),
        derived_from="llama-3.1-8b",
        relation="adapter",
    )
    chain = lineage(adapter)
    assert [link.name for link in chain.links] == ["llama-3.1-8b", "my-llama"]
    assert len(chain.conditions) == len(license_info("llama3.1").conditions)


def test_commercial_base_with_non_commercial_dataset_refused() -> None:
    chain = lineage("mistral-7b", datasets=[DatasetSource(name="forum-dump", license=CC_BY_NC)], output="bot")
    assert chain.commercial_use == "forbidden"
    decision = check_policy(chain, "commercial")
    assert not decision.allowed
    assert decision.offending == ["forum-dump"]
    assert "dataset forum-dump (license: CC-BY-NC-4.0) forbids commercial use" in decision.message
    assert check_policy(chain, "research").allowed


def test_dataset_forms_are_equivalent() -> None:
    spec_like = {"name": "CC-BY-NC-4.0", "commercialUse": "forbidden"}
    chain = lineage(
        "qwen2.5-7b",
        datasets=[
            ("a", CC_BY_NC),
            ("b", spec_like),
            {"name": "c", "license": CC_BY_NC},
            DatasetSource(name="d", license=CC_BY_NC),
            "alpaca-data",
            ("a", CC_BY_NC),
        ],
    )
    datasets = chain.datasets
    assert [d.name for d in datasets] == ["a", "b", "c", "d", "alpaca-data"]
    assert {d.license.commercial_use for d in datasets} == {"forbidden"}
    assert "text-davinci-003" in (datasets[-1].license.notes or "")


def test_tiny_presets_allowed() -> None:
    for name in ("tiny-llama", "tiny-neox", "tiny-glm"):
        decision = check_policy(lineage(name, output=f"{name}-lora"), "commercial")
        assert decision.allowed and decision.reason == "Allowed", decision


def test_non_catalog_model_from_uri() -> None:
    uri_model = ModelSource(name="in-house-7b", license=LicenseInfo(license="Apache-2.0", commercial_use="allowed"))
    chain = lineage(uri_model, output="bot")
    assert [(link.name, link.relation) for link in chain.links] == [("in-house-7b", "base"), ("bot", "adapter")]
    assert check_policy(chain, "commercial").reason == "Allowed"


def test_nested_model_sources_walk_to_catalog_root() -> None:
    first = ModelSource(
        name="team-alpaca", license=LicenseInfo(license="MIT", commercial_use="allowed"), derived_from="alpaca-7b"
    )
    second = ModelSource(
        name="team-alpaca-v2",
        license=LicenseInfo(license="MIT", commercial_use="allowed"),
        derived_from=first,
        relation="finetune",
    )
    chain = lineage(second)
    assert [link.name for link in chain.links] == ["llama-7b", "alpaca-7b", "team-alpaca", "team-alpaca-v2"]
    assert chain.commercial_use == "forbidden"
    assert check_policy(chain, "commercial").offending == ["alpaca-7b", "llama-7b"]


def test_lineage_link_accepted_as_model() -> None:
    link = LineageLink(
        kind="model",
        name="gemma-tune",
        license=license_info("gemma"),
        relation="adapter",
        derived_from="gemma-2-2b",
    )
    chain = lineage(link)
    assert [link.name for link in chain.links] == ["gemma-2-2b", "gemma-tune"]
    assert check_policy(chain, "commercial").reason == "LicenseConditions"


def test_license_info_from_spec_defaults_to_forbidden() -> None:
    info = LicenseInfo.from_spec({"name": "custom"})
    assert info.license == "custom" and info.commercial_use == "forbidden"


def test_invalid_inputs() -> None:
    with pytest.raises(UnknownModelError):
        lineage("llama-8b")
    with pytest.raises(KeyError, match="alpaca-data"):
        lineage("mistral-7b", datasets=["alpaca-dat"])
    with pytest.raises(ValidationError, match="conditional"):
        LicenseInfo(license="x", commercial_use="conditional")
    with pytest.raises(ValidationError, match="training-data"):
        LineageLink(kind="dataset", name="d", license=CC_BY_NC, relation="base")
    with pytest.raises(ValidationError, match="needs derived_from"):
        ModelSource(name="m", license=CC_BY_NC, relation="adapter")
    with pytest.raises(ValueError, match="intended_use"):
        check_policy(lineage("tiny-llama"), "personal")  # type: ignore[arg-type]
