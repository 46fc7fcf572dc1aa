"""The file:// store: put/get/list/exists/delete, directories, SHA-256, atomic writes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.artifacts import ArtifactError, ArtifactInfo, ArtifactNotFound, open_store
from corral.artifacts._local import atomic_write


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


def test_put_get_bytes_and_info(store_root: Path) -> None:
    store = open_store(store_root.as_uri())
    uri = (store_root / "a" / "b" / "config.json").as_uri()
    data = b'{"hidden_size": 64}'
    info = store.put_bytes(data, uri)
    assert info == ArtifactInfo(uri, len(data), _sha(data))
    assert store.get_bytes(uri) == data
    assert store.info(uri) == info
    assert store.exists(uri)
    # Plain absolute paths address the same artifact.
    assert store.get_bytes(str(store_root / "a" / "b" / "config.json")) == data


def test_put_file_get_file_sha256(tmp_path: Path, store_root: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # spans several copy blocks
    source = tmp_path / "weights.bin"
    source.write_bytes(data)
    store = open_store(str(store_root))
    uri = f"file://{store_root}/models/weights.bin"
    put = store.put_file(source, uri)
    assert (put.size, put.sha256) == (len(data), _sha(data))
    dest = tmp_path / "out" / "nested" / "weights.bin"
    got = store.get_file(uri, dest)
    assert got == put
    assert dest.read_bytes() == data


def test_put_file_overwrites(tmp_path: Path, store_root: Path) -> None:
    store = open_store(str(store_root))
    uri = str(store_root / "x.txt")
    store.put_bytes(b"old", uri)
    store.put_bytes(b"new content", uri)
    assert store.get_bytes(uri) == b"new content"


def test_missing_artifacts(tmp_path: Path, store_root: Path) -> None:
    store = open_store(str(store_root))
    missing = str(store_root / "nope.bin")
    assert not store.exists(missing)
    with pytest.raises(ArtifactNotFound) as excinfo:
        store.get_bytes(missing)
    assert "nope.bin" in str(excinfo.value)
    assert excinfo.value.uri.endswith("nope.bin")
    with pytest.raises(ArtifactNotFound):
        store.get_file(missing, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    with pytest.raises(ArtifactNotFound):
        store.info(missing)
    with pytest.raises(ArtifactNotFound):
        store.put_file(tmp_path / "no-such-source", str(store_root / "y"))
    assert store.list(str(store_root / "nothing-here")) == []
    store.delete(missing)  # missing is not an error


def test_list_is_recursive_sorted_and_prefix_is_a_directory(store_root: Path) -> None:
    store = open_store(str(store_root))
    for rel in ("run/b.txt", "run/a/z.txt", "run/a/y.txt", "runner/other.txt"):
        store.put_bytes(rel.encode(), str(store_root / rel))
    listed = store.list(str(store_root / "run"))
    assert listed == [
        (store_root / "run/a/y.txt").as_uri(),
        (store_root / "run/a/z.txt").as_uri(),
        (store_root / "run/b.txt").as_uri(),
    ]
    assert store.list(str(store_root / "run/b.txt")) == [(store_root / "run/b.txt").as_uri()]
    assert len(store.list(store_root.as_uri())) == 4


def test_delete(store_root: Path) -> None:
    store = open_store(str(store_root))
    uri = str(store_root / "d" / "f.bin")
    store.put_bytes(b"x", uri)
    store.delete(uri)
    assert not store.exists(uri)
    store.delete(uri)
    with pytest.raises(ArtifactError, match="directory"):
        store.delete(str(store_root / "d"))


def test_upload_and_download_dir_round_trip(tmp_path: Path, store_root: Path) -> None:
    src = tmp_path / "ckpt"
    files = {
        "config.json": b"{}",
        "model.safetensors": os.urandom(100_000),
        "tokenizer/vocab.txt": b"a\nb\n",
        "tokenizer/deep/merges.txt": b"",
    }
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    store = open_store(str(store_root))
    prefix = (store_root / "models" / "m1").as_uri()
    uploaded = store.upload_dir(src, prefix)
    assert sorted(i.uri for i in uploaded) == store.list(prefix)
    assert {i.uri: i.sha256 for i in uploaded} == {f"{prefix}/{rel}": _sha(data) for rel, data in files.items()}
    dest = tmp_path / "restored"
    downloaded = store.download_dir(prefix, dest)
    assert sorted(downloaded, key=lambda i: i.uri) == sorted(uploaded, key=lambda i: i.uri)
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data
    with pytest.raises(ArtifactNotFound):
        store.download_dir(str(store_root / "empty"), tmp_path / "x")
    with pytest.raises(ArtifactError):
        store.upload_dir(tmp_path / "not-a-dir", prefix)


def test_download_dir_of_a_single_file(tmp_path: Path, store_root: Path) -> None:
    store = open_store(str(store_root))
    store.put_bytes(b"one", str(store_root / "only.bin"))
    infos = store.download_dir(str(store_root / "only.bin"), tmp_path / "d")
    assert [i.size for i in infos] == [3]
    assert (tmp_path / "d" / "only.bin").read_bytes() == b"one"


def _failing_chunks() -> Iterator[bytes]:
    yield b"first half of the new content, "
    raise OSError("disk went away mid-write")


def test_atomic_write_keeps_old_content_when_the_write_fails(tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    dest.write_bytes(b"previous complete content")
    with pytest.raises(OSError, match="mid-write"):
        atomic_write(dest, _failing_chunks())
    assert dest.read_bytes() == b"previous complete content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]  # temp file removed


def test_atomic_write_never_exposes_a_partial_file(
    tmp_path: Path, store_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash before the rename leaves no file under the final name."""
    store = open_store(str(store_root))
    dest = tmp_path / "fresh" / "weights.bin"

    def crash(src: object, dst: object) -> None:
        raise KeyboardInterrupt("killed before rename")

    store.put_bytes(b"payload", str(store_root / "w.bin"))
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.get_file(str(store_root / "w.bin"), dest)
    monkeypatch.undo()
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_listing_skips_leftover_temp_files(store_root: Path) -> None:
    """A temp file left by a killed process is never listed as an artifact."""
    store = open_store(str(store_root))
    store.put_bytes(b"ok", str(store_root / "good.bin"))
    (store_root / ".good.bin.0123456789ab.corral-tmp").write_bytes(b"partial")
    assert store.list(str(store_root)) == [(store_root / "good.bin").as_uri()]


def test_written_files_honour_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "f", [b"x"])
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


def test_store_rejects_other_schemes(store_root: Path) -> None:
    store = open_store(str(store_root))
    with pytest.raises(ValueError, match="file://"):
        store.get_bytes("s3://bucket/key")


def test_download_dir_refuses_path_escape(tmp_path: Path) -> None:
    from corral.artifacts._base import safe_join

    with pytest.raises(ArtifactError, match="unsafe"):
        safe_join(tmp_path, "../outside")
    with pytest.raises(ArtifactError, match="unsafe"):
        safe_join(tmp_path, "/etc/passwd")
    assert safe_join(tmp_path, "a/b") == tmp_path / "a" / "b"
