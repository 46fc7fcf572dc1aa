"""Shared pytest configuration: fixtures modules registered for every test directory."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.fixtures.s3", "tests.fixtures.ray_cluster", "tests.fixtures.ray_train", "tests.fixtures.kube"]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep each ``story`` module's tests in file order, wherever pytest-randomly put them.

    A story module (``pytestmark = pytest.mark.story``) is one scenario told in steps over shared
    module fixtures (apply, then restart, then delete...). ``make test-repeat`` still shuffles
    the modules and every other test; only the steps of a story keep their order, in the slots
    the shuffle gave them.
    """
    slots: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        if item.get_closest_marker("story") is not None:
            slots.setdefault(item.nodeid.split("::", 1)[0], []).append(index)
    for indices in slots.values():
        ordered = sorted((items[i] for i in indices), key=lambda it: (it.location[1] or 0, it.nodeid))
        for index, item in zip(indices, ordered, strict=True):
            items[index] = item


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO
