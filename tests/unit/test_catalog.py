"""Tests for corral.catalog: the catalog data file, its validation and look-ups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from corral import catalog
from corral.catalog import CatalogEntry, CatalogError, UnknownModelError, load_catalog

REQUIRED = {
    "llama-7b": "forbidden",
    "llama-13b": "forbidden",
    "llama-33b": "forbidden",
    "llama-65b": "forbidden",
    "alpaca-7b": "forbidden",
    "vicuna-13b": "forbidden",
    "koala-13b": "forbidden",
    "pythia-12b": "allowed",
    "dolly-v2-12b": "allowed",
    "chatglm-6b": "conditional",
    "glm-130b": "forbidden",
    "pangu-alpha-2.6b": "allowed",
    "pangu-alpha-13b": "allowed",
    "pangu-alpha-200b": "forbidden",
    "llama-3.1-8b": "conditional",
    "llama-3.1-70b": "conditional",
    "qwen2.5-7b": "allowed",
    "qwen2.5-72b": "conditional",
    "mistral-7b": "allowed",
    "gemma-2-9b": "conditional",
    "phi-3-mini": "allowed",
    "tiny-llama": "allowed",
    "tiny-neox": "allowed",
    "tiny-glm": "allowed",
}


def _entry(name: str, **overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "family": "test",
        "params": 1000,
        "architecture": "llama",
        "context_length": 128,
        "license": "Apache-2.0",
        "license_name": "Apache License 2.0",
        "license_url": "https://www.apache.org/licenses/LICENSE-2.0",
        "commercial_use": "allowed",
        "derived_from": None,
        "hf_repo": None,
        "chat_template": "chatml",
    }
    entry.update(overrides)
    return entry


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "commercial_use"), sorted(REQUIRED.items()))
def test_required_models_present_with_commercial_use(name: str, commercial_use: str) -> None:
    assert catalog.get(name).commercial_use == commercial_use


def test_default_catalog_is_cached() -> None:
    assert load_catalog() is load_catalog()


def test_entries_are_catalog_entries_with_unique_names() -> None:
    entries = list(catalog.entries())
    assert all(isinstance(e, CatalogEntry) for e in entries)
    names = [e.name for e in entries]
    assert len(names) == len(set(names)) >= len(REQUIRED)


def test_conditional_entries_have_conditions() -> None:
    for entry in catalog.entries():
        if entry.commercial_use == "conditional":
            assert entry.conditions, entry.name


def test_llama_derivatives_chain_to_llama() -> None:
    cat = load_catalog()
    assert [e.name for e in cat.chain("alpaca-7b")] == ["llama-7b", "alpaca-7b"]
    assert catalog.get("vicuna-13b").derived_from == "llama-13b"
    assert catalog.get("koala-13b").derived_from == "llama-13b"
    assert [e.name for e in cat.chain("dolly-v2-12b")] == ["pythia-12b", "dolly-v2-12b"]


def test_license_facts() -> None:
    assert catalog.get("llama-7b").license_name == "LLaMA non-commercial research license"
    assert "text-davinci-003" in (catalog.get("alpaca-7b").training_data_notes or "")
    assert catalog.get("dolly-v2-12b").license == "MIT"
    assert catalog.get("pythia-12b").license == "Apache-2.0"
    assert catalog.get("qwen2.5-7b").license == "Apache-2.0"
    assert any("100 million" in c for c in catalog.get("qwen2.5-72b").conditions)
    assert catalog.get("mistral-7b").license == "Apache-2.0"
    assert catalog.get("phi-3-mini").license == "MIT"
    assert catalog.get("pangu-alpha-200b").weights_available is False
    assert "not" in (catalog.get("pangu-alpha-200b").notes or "")
    llama31 = " ".join(catalog.get("llama-3.1-8b").conditions)
    assert '"Llama"' in llama31 and "700 million" in llama31 and "Built with Llama" in llama31


def test_tiny_presets_are_builtin() -> None:
    for arch in ("llama", "gpt_neox", "glm"):
        name = {"llama": "tiny-llama", "gpt_neox": "tiny-neox", "glm": "tiny-glm"}[arch]
        entry = catalog.get(name)
        assert entry.builtin == arch
        assert entry.architecture == arch
        assert entry.hf_repo is None
        assert entry.license == "Apache-2.0"


def test_unknown_model_lists_close_matches() -> None:
    with pytest.raises(UnknownModelError) as info:
        catalog.get("llama-7")
    assert isinstance(info.value, KeyError)
    assert "llama-7b" in info.value.suggestions
    assert "llama-7b" in str(info.value)


def test_known_licenses_and_datasets() -> None:
    assert catalog.license_info("cc-by-nc-4.0").commercial_use == "forbidden"
    assert catalog.license_info("CC-BY-SA-3.0").share_alike is True
    assert catalog.get_dataset("databricks-dolly-15k").license == "CC-BY-SA-3.0"
    with pytest.raises(KeyError, match=r"CC-BY-NC-4\.0"):
        catalog.license_info("CC-BY-NC-4")


def test_entry_rejects_conditional_without_conditions() -> None:
    with pytest.raises(ValidationError, match="conditional"):
        CatalogEntry.model_validate(_entry("x", commercial_use="conditional"))


def test_entry_rejects_unknown_fields_and_bad_names() -> None:
    with pytest.raises(ValidationError, match="extra"):
        CatalogEntry.model_validate(_entry("x", licence="MIT"))
    with pytest.raises(ValidationError, match="name"):
        CatalogEntry.model_validate(_entry("Llama_7B"))
    with pytest.raises(ValidationError, match="params"):
        CatalogEntry.model_validate(_entry("x", params=0))


def test_load_catalog_from_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {"models": [_entry("base"), _entry("child", derived_from="base")]})
    cat = load_catalog(path)
    assert cat.names() == ["base", "child"]
    assert "child" in cat


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        ([_entry("a"), _entry("a")], "duplicate model 'a'"),
        ([_entry("a", derived_from="ghost")], "model 'a': derived_from 'ghost' is not a model"),
        ([_entry("a", derived_from="b"), _entry("b", derived_from="a")], "model 'a': derived_from cycle a -> b -> a"),
        ([_entry("a", derived_from="a")], r"models\[0\] \(a\): derived_from 'a' names the entry itself"),
        ([_entry("ok"), _entry("bad", commercial_use="conditional")], r"models\[1\] \(bad\): commercial_use"),
        ([_entry("bad", architecture="bert")], r"models\[0\] \(bad\)\.architecture"),
    ],
)
def test_invalid_catalog_names_the_entry(tmp_path: Path, models: list[dict[str, Any]], expected: str) -> None:
    path = _write(tmp_path, {"models": models})
    with pytest.raises(CatalogError, match=expected) as info:
        load_catalog(path)
    assert str(path) in str(info.value)


def test_dataset_with_unknown_license_is_rejected(tmp_path: Path) -> None:
    doc = {"models": [_entry("a")], "datasets": [{"name": "d", "license": "WTFPL"}]}
    with pytest.raises(CatalogError, match="dataset 'd': license 'WTFPL'"):
        load_catalog(_write(tmp_path, doc))


def test_malformed_or_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [", encoding="utf-8")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(bad)
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="expected a mapping"):
        load_catalog(listing)
