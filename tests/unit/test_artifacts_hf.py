"""The read-only hf:// store, resolved from a huggingface_hub cache built in the test.

The cache is laid out as huggingface_hub writes it (``models--org--name/{blobs,refs,snapshots}``
with relative symlinks) and checked with huggingface_hub's own ``scan_cache_dir``. Every
socket connection and DNS lookup is blocked for these tests: nothing may touch the network.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import constants as hf_constants

from corral.artifacts import ArtifactError, ArtifactNotFound, ArtifactSettings, open_store

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "corral-test/tiny-llama"
FILES = {
    "config.json": b'{"model_type": "llama", "hidden_size": 64}',
    "model.safetensors": os.urandom(4096),
    "tokenizer/tokenizer.json": b'{"version": "1.0"}',
    "tokenizer/special_tokens_map.json": b"{}",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly on any attempt to open a connection or resolve a name."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted in an offline test: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


def build_cache(cache: Path, repo_id: str, files: dict[str, bytes], refs: dict[str, str]) -> Path:
    """Write a repo into a huggingface_hub cache the way ``hf_hub_download`` does.

    Returns:
        The snapshot folder.
    """
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / COMMIT
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        etag = _sha(data)  # LFS files are stored under their sha256
        (repo_dir / "blobs" / etag).write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(repo_dir / "blobs" / etag, link.parent))
    (repo_dir / "refs").mkdir(exist_ok=True)
    for ref, commit in refs.items():
        (repo_dir / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def hf_cache(tmp_path: Path) -> Path:
    cache = tmp_path / "hf-cache"
    build_cache(cache, REPO, FILES, {"main": COMMIT, "v1": COMMIT})
    # The layout is the one huggingface_hub itself understands.
    scanned = huggingface_hub.scan_cache_dir(cache)
    assert [r.repo_id for r in scanned.repos] == [REPO]
    assert scanned.warnings == []
    return cache


@pytest.fixture
def offline(hf_cache: Path) -> ArtifactSettings:
    return ArtifactSettings(hf_offline=True, hf_cache_dir=hf_cache)


def test_get_file_resolves_from_cache(offline: ArtifactSettings, tmp_path: Path) -> None:
    store = open_store("hf://x/y", offline)
    for revision in ("", "@main", "@v1", f"@{COMMIT}"):
        uri = f"hf://{REPO}{revision}/config.json"
        dest = tmp_path / f"out{revision}" / "config.json"
        info = store.get_file(uri, dest)
        assert dest.read_bytes() == FILES["config.json"]
        assert not dest.is_symlink()  # a real copy, not a link into the cache
        assert (info.uri, info.size, info.sha256) == (
            uri,
            len(FILES["config.json"]),
            _sha(FILES["config.json"]),
        )
    assert store.get_bytes(f"hf://{REPO}/tokenizer/tokenizer.json") == FILES["tokenizer/tokenizer.json"]
    assert store.info(f"hf://{REPO}/model.safetensors").sha256 == _sha(FILES["model.safetensors"])
    assert store.exists(f"hf://{REPO}/config.json")
    assert not store.exists(f"hf://{REPO}/missing.bin")


def test_download_dir_whole_repo_and_subfolder(offline: ArtifactSettings, tmp_path: Path) -> None:
    store = open_store(f"hf://{REPO}", offline)
    infos = store.download_dir(f"hf://{REPO}@main", tmp_path / "full")
    assert sorted(i.uri for i in infos) == sorted(f"hf://{REPO}@main/{rel}" for rel in FILES)
    for rel, data in FILES.items():
        assert (tmp_path / "full" / rel).read_bytes() == data

    sub = store.download_dir(f"hf://{REPO}/tokenizer", tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == [
        "special_tokens_map.json",
        "tokenizer.json",
    ]
    assert {i.sha256 for i in sub} == {
        _sha(FILES["tokenizer/tokenizer.json"]),
        _sha(FILES["tokenizer/special_tokens_map.json"]),
    }


def test_list_offline_lists_the_cached_snapshot(offline: ArtifactSettings) -> None:
    store = open_store(f"hf://{REPO}", offline)
    assert store.list(f"hf://{REPO}") == sorted(f"hf://{REPO}/{rel}" for rel in FILES)
    assert store.list(f"hf://{REPO}@v1/tokenizer") == [
        f"hf://{REPO}@v1/tokenizer/special_tokens_map.json",
        f"hf://{REPO}@v1/tokenizer/tokenizer.json",
    ]


def test_hf_hub_offline_env_is_honoured(hf_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=1 (read by huggingface_hub at import) turns offline mode on by itself."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    store = open_store(f"hf://{REPO}", ArtifactSettings(hf_cache_dir=hf_cache))
    assert "offline=True" in repr(store)
    store.get_file(f"hf://{REPO}/config.json", tmp_path / "c.json")
    assert (tmp_path / "c.json").read_bytes() == FILES["config.json"]
    with pytest.raises(ArtifactNotFound, match="offline mode"):
        store.get_file("hf://corral-test/not-cached/config.json", tmp_path / "x")


def test_missing_repo_offline_is_a_clear_not_found(offline: ArtifactSettings, tmp_path: Path) -> None:
    store = open_store("hf://a/b", offline)
    with pytest.raises(ArtifactNotFound) as excinfo:
        store.get_file("hf://corral-test/never-downloaded@main/config.json", tmp_path / "x")
    message = str(excinfo.value)
    assert "hf://corral-test/never-downloaded@main/config.json" in message
    assert "offline mode" in message
    assert str(offline.hf_cache_dir) in message
    assert not (tmp_path / "x").exists()
    with pytest.raises(ArtifactNotFound, match="offline mode"):
        store.download_dir("hf://corral-test/never-downloaded", tmp_path / "d")
    with pytest.raises(ArtifactNotFound, match="offline mode"):
        store.get_bytes(f"hf://{REPO}/not-in-repo.bin")
    with pytest.raises(ArtifactNotFound):
        store.list("hf://corral-test/never-downloaded")


def test_hf_is_read_only(offline: ArtifactSettings, tmp_path: Path) -> None:
    store = open_store(f"hf://{REPO}", offline)
    (tmp_path / "f").write_bytes(b"x")
    for call in (
        lambda: store.put_file(tmp_path / "f", f"hf://{REPO}/f"),
        lambda: store.put_bytes(b"x", f"hf://{REPO}/f"),
        lambda: store.delete(f"hf://{REPO}/config.json"),
        lambda: store.upload_dir(tmp_path, f"hf://{REPO}/d"),
    ):
        with pytest.raises(ArtifactError, match="read-only"):
            call()
    assert store.get_bytes(f"hf://{REPO}/config.json") == FILES["config.json"]


def test_repo_uri_without_file_is_rejected_for_file_ops(offline: ArtifactSettings) -> None:
    store = open_store(f"hf://{REPO}", offline)
    with pytest.raises(ValueError, match="repository, not a file"):
        store.get_bytes(f"hf://{REPO}")
    assert not store.exists(f"hf://{REPO}")
