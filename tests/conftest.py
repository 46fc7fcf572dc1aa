"""Shared pytest configuration: fixtures modules registered for every test directory."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.fixtures.s3", "tests.fixtures.ray_cluster", "tests.fixtures.ray_train", "tests.fixtures.kube"]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO
