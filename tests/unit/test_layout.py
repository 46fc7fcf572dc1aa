"""Guards for the repository layout: source roots are not packages, imports work."""

import importlib
import subprocess
import sys

from tests.conftest import REPO


def test_source_roots_are_not_packages() -> None:
    assert not (REPO / "platform" / "__init__.py").exists()
    assert not (REPO / "operators" / "__init__.py").exists()


def test_stdlib_platform_still_works_from_repo_root() -> None:
    code = "import platform, corral, corral_operator; print(platform.system()); print(corral.__version__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    system, version = out.stdout.split()
    assert system == "Linux"
    assert version == importlib.import_module("corral").__version__


def test_public_modules_declare_all() -> None:
    for name in ("corral.api", "corral.api.v1alpha1", "corral.api.crdgen"):
        module = importlib.import_module(name)
        assert module.__all__, name
        for symbol in module.__all__:
            assert hasattr(module, symbol), f"{name}.{symbol}"
