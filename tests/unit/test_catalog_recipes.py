"""corral.catalog recipes and the auto hyper-parameter rule (pure; no training)."""

from __future__ import annotations

import pytest

from corral.api.v1alpha1.finetunejob import Hyperparameters
from corral.catalog import choose_hyperparameters, load_catalog


def test_every_model_has_a_recipe_with_sources() -> None:
    catalog = load_catalog()
    for entry in catalog.entries():
        recipe = catalog.recipe(entry.family)
        assert recipe.sources and 0 < recipe.full_learning_rate <= recipe.lora_learning_rate
    assert catalog.recipe_for_model("tiny-llama").family == "tiny"
    assert catalog.recipe_for_model("llama-3.1-8b").family == "default"
    assert catalog.recipe_for_model(None).lora_learning_rate == 1e-4


def test_small_data_on_a_tiny_base_gets_enough_steps() -> None:
    recipe = load_catalog().recipe("tiny")
    choice = choose_hyperparameters(Hyperparameters(), method="lora", recipe=recipe, examples=64)
    st = choice.status
    assert (st.validation_split_percent, st.train_examples, st.global_batch_size) == (10, 58, 16)
    assert st.steps_per_epoch == 3 and st.epochs == 80 and st.total_steps == 240
    assert choice.hyperparameters.learning_rate == 2e-3
    assert any("minSteps=240" in r for r in st.reasons) and len(st.reasons) == 4


def test_openai_rule_for_larger_data_and_large_data_is_capped() -> None:
    recipe = load_catalog().recipe("default")
    mid = choose_hyperparameters(Hyperparameters(), method="qlora", recipe=recipe, examples=5000).status
    assert mid.epochs == 3 and mid.learning_rate == 2e-4 and mid.global_batch_size == 32
    big = choose_hyperparameters(Hyperparameters(), method="full", recipe=recipe, examples=100_000).status
    assert big.epochs == 1 and big.learning_rate == 1e-5  # OpenAI: at most 25,000 examples seen, at least 1 epoch
    tiny_data = choose_hyperparameters(Hyperparameters(), method="lora", recipe=recipe, examples=10).status
    assert tiny_data.validation_split_percent == 0 and tiny_data.epochs == recipe.max_epochs


@pytest.mark.parametrize("workers", [1, 3])
def test_values_the_job_sets_are_kept(workers: int) -> None:
    hp = Hyperparameters(epochs=2, learning_rate=0.01, global_batch_size=12, validation_split_percent=0)
    choice = choose_hyperparameters(
        hp, method="lora", recipe=load_catalog().recipe("tiny"), examples=64, workers=workers
    )
    assert (choice.status.epochs, choice.status.learning_rate, choice.status.global_batch_size) == (2, 0.01, 12)
    assert choice.status.reasons == []


def test_auto_batch_is_a_multiple_of_micro_times_workers() -> None:
    choice = choose_hyperparameters(
        Hyperparameters(micro_batch_size=3),
        method="lora",
        recipe=load_catalog().recipe("tiny"),
        examples=200,
        workers=2,
    )
    assert choice.status.global_batch_size % 6 == 0


def test_resolved_falls_back_to_the_fixed_defaults() -> None:
    resolved = Hyperparameters().resolved()
    assert (resolved.epochs, resolved.learning_rate, resolved.global_batch_size) == (3, 2e-4, 32)
    assert resolved.validation_split_percent == 0
