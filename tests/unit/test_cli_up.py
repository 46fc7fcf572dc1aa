"""``corral up`` and ``corral down`` around their state files: the tokens file, the pid file, modes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from corral.cli._up import TokensFileError, _ensure_token, _private_dir, stop_daemon
from corral.client import Context, save_context
from corral.controlapi import TokenAuth, hash_token

TEAM_TOKENS = """# team tokens: do not lose
tokens:
  - name: team-a
    tokenSha256: {a}
    namespaces: [team-a]
  - name: admin
    token: old-admin-token-0001
    namespaces: ["*"]
""".format(a=hash_token("team-a-token-0001"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CORRAL_SERVER", raising=False)
    monkeypatch.delenv("CORRAL_TOKEN", raising=False)
    data = tmp_path / "data"
    data.mkdir()
    return data


def test_a_tokens_file_without_the_context_token_keeps_every_entry(home: Path) -> None:
    """It used to be rewritten with one admin entry, wiping every team token."""
    tokens = home / "tokens.yaml"
    tokens.write_text(TEAM_TOKENS)
    save_context(Context(server="http://127.0.0.1:1", token="a-token-that-is-not-in-the-file"))
    token = _ensure_token(home, "http://127.0.0.1:1")
    text = tokens.read_text()
    assert text.startswith(TEAM_TOKENS)  # byte for byte, comments included
    auth = TokenAuth.from_file(tokens)
    assert [e.name for e in auth.entries] == ["team-a", "admin", "admin-2"]
    assert auth.authenticate(token).all_namespaces and auth.authenticate("team-a-token-0001").name == "team-a"
    assert oct(tokens.stat().st_mode & 0o777) == "0o600"
    save_context(Context(server="http://127.0.0.1:1", token=token))
    assert _ensure_token(home, "http://127.0.0.1:1") == token and tokens.read_text() == text  # known: untouched


def test_a_tokens_file_that_cannot_take_an_entry_is_refused_not_rewritten(home: Path) -> None:
    tokens = home / "tokens.yaml"
    flow = "tokens: [{name: team-a, tokenSha256: " + hash_token("team-a-token-0001") + ", namespaces: [team-a]}]\n"
    tokens.write_text(flow)
    with pytest.raises(TokensFileError, match="cannot be appended to it safely"):
        _ensure_token(home, "http://127.0.0.1:1")
    assert tokens.read_text() == flow
    tokens.write_text("tokens: 3\n")
    with pytest.raises(TokensFileError, match="not a valid tokens file"):
        _ensure_token(home, "http://127.0.0.1:1")
    assert tokens.read_text() == "tokens: 3\n"


def test_first_up_creates_a_private_tokens_file(home: Path) -> None:
    token = _ensure_token(home, "http://127.0.0.1:1")
    tokens = home / "tokens.yaml"
    assert oct(tokens.stat().st_mode & 0o777) == "0o600"
    assert yaml.safe_load(tokens.read_text())["tokens"][0]["tokenSha256"] == hash_token(token)


def test_private_dir_modes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "corral.db").write_text("x")
    (data / "corral.db").chmod(0o644)
    (data / "artifacts").mkdir(mode=0o755)
    _private_dir(data)
    assert data.stat().st_mode & 0o777 == 0o700
    assert (data / "corral.db").stat().st_mode & 0o777 == 0o600
    assert (data / "artifacts").stat().st_mode & 0o777 == 0o700


def test_down_never_signals_a_process_that_reused_the_pid(home: Path) -> None:
    """A pid file left by a crash may name someone else's process now: it is left alone."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (home / "corral.pid").write_text(str(stranger.pid))
        assert stop_daemon(home, timeout=2) is False
        time.sleep(0.2)
        assert stranger.poll() is None, "a process that is not Corral's daemon was signalled"
        assert not (home / "corral.pid").exists()  # the stale pid file is gone
    finally:
        stranger.kill()
        stranger.wait()


# That down stops the home's own daemon (lock + pid record with start time and command line) is
# tested in tests/unit/test_cli_home.py and, with a real daemon, in tests/faults/.
