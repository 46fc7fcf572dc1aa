"""Bounded input, piece by piece: streamed JSON arrays, streamed multipart, JSON/YAML limits, bounded messages."""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

import pytest

import corral.data._records as records
from corral.api._show import show
from corral.artifacts import URIPolicy, URIRefused, spec_uris
from corral.controlapi._limits import InputError, check_finite, check_namespace, decode_json, decode_yaml
from corral.controlapi._multipart import MultipartError, boundary_of, split_multipart
from corral.data._records import RecordError, RecordReader

# -- JSON arrays are read element by element -------------------------------------------------

ARRAYS = {
    '[123456789, 2.5e10, true, null, "s"]': [123456789, 2.5e10, True, None, "s"],
    '[{"k": "vvvvvvvvvvvvvvvvvvvvvvvv"}, [1, [2, [3]]]]': [{"k": "v" * 24}, [1, [2, [3]]]],
    "\ufeff[ 1 ,\n 2 ]": [1, 2],
    "[]": [],
}
BAD_ARRAYS = {
    "[1,2": "the array is not closed at line 1 column 5",
    "[1,\n  2 x]": "expected ',' or ']' at line 2 column 5",
    "[1, 2.x]": "expected ',' or ']' at line 1 column 6",
    "[NaN]": "numbers must be finite",
    "[1] [2]": "extra data after the array",
}


@pytest.mark.parametrize("chunk", [3, 7, 1 << 20])
def test_json_arrays_stream_across_chunk_edges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(records, "_CHUNK", chunk)
    for text, expected in ARRAYS.items():
        path = tmp_path / "a.json"
        path.write_text(text, encoding="utf-8")
        assert [record for _, record in RecordReader(path)] == expected, text
    for text, message in BAD_ARRAYS.items():
        path = tmp_path / "a.json"
        path.write_text(text, encoding="utf-8")
        got = list(RecordReader(path))
        assert len(got) == 1 and isinstance(got[0][1], RecordError), text
        assert message in got[0][1].message and "no record could be read" in got[0][1].message


def test_a_json_array_is_never_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Structure, not timing: the reader never asks for the whole file and reads in chunks."""
    path = tmp_path / "big.json"
    path.write_text(json.dumps([{"i": i, "text": "x" * 100} for i in range(5000)]), encoding="utf-8")
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("read whole"))
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: pytest.fail("read whole"))
    sizes: list[int] = []
    real_open = Path.open

    def tracking_open(self: Path, *args: object, **kwargs: object) -> object:
        handle = real_open(self, *args, **kwargs)  # type: ignore[arg-type]
        read = handle.read

        def bounded_read(n: int = -1) -> bytes:
            assert n != -1 and n <= records._CHUNK, "an unbounded read"
            sizes.append(n)
            return read(n)

        handle.read = bounded_read  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr(Path, "open", tracking_open)
    assert sum(1 for _ in records._stream_array(path)) == 5000
    assert sizes and max(sizes) <= records._CHUNK


# -- multipart is split from a file, the file part straight to disk ---------------------------


def _form(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b"preamble\r\n"
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize("chunk", [5, 1 << 20])
def test_multipart_streams_the_file_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    import corral.controlapi._multipart as multipart

    monkeypatch.setattr(multipart, "CHUNK", chunk)
    data = b'{"a": 1}\r\n--not-the-boundary\r\n' * 50
    body = _form("xyzzy", [("purpose", None, b"fine-tune"), ("file", "../../etc/x.jsonl", data)])
    boundary = boundary_of('multipart/form-data; boundary="xyzzy"')
    fields, upload = split_multipart(
        io.BytesIO(body), boundary, tmp_path / "out", max_file_bytes=10_000, digest_prefix=b"ns\0"
    )
    assert fields == {"purpose": "fine-tune"}
    assert upload is not None and upload.filename == "../../etc/x.jsonl"  # sanitized by the file store
    assert (tmp_path / "out").read_bytes() == data and upload.size == len(data)
    assert upload.sha256 == hashlib.sha256(b"ns\0" + data).hexdigest()


def test_multipart_refusals(tmp_path: Path) -> None:
    with pytest.raises(MultipartError, match="multipart/form-data"):
        boundary_of("application/json")
    with pytest.raises(MultipartError, match="no boundary"):
        boundary_of("multipart/form-data")
    big = _form("b", [("file", "f", b"x" * 2000)])
    with pytest.raises(MultipartError, match="larger than 1000 bytes"):
        split_multipart(io.BytesIO(big), b"b", tmp_path / "o", max_file_bytes=1000)
    two = _form("b", [("file", "f", b"1"), ("file", "g", b"2")])
    with pytest.raises(MultipartError, match="exactly one file"):
        split_multipart(io.BytesIO(two), b"b", tmp_path / "o", max_file_bytes=1000)
    cut = _form("b", [("file", "f", b"data")])[:-20]
    with pytest.raises(MultipartError, match="ends inside"):
        split_multipart(io.BytesIO(cut), b"b", tmp_path / "o", max_file_bytes=1000)
    many = _form("b", [(f"f{i}", None, b"v") for i in range(40)])
    with pytest.raises(MultipartError, match="at most 16 parts"):
        split_multipart(io.BytesIO(many), b"b", tmp_path / "o", max_file_bytes=1000)


# -- JSON, YAML, numbers, namespaces ----------------------------------------------------------


def test_decode_json_limits() -> None:
    assert decode_json(b"") is None and decode_json(b'{"a": [1]}') == {"a": [1]}
    for raw, message in (
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        (b"[" * 101 + b"]" * 101, "nested deeper than 100"),
        (b'{"x": NaN}', "finite"),
        (b'{"x": -Infinity}', "finite"),
        (b"\xff", "not UTF-8"),
        (b"{", "not valid JSON"),
    ):
        with pytest.raises(InputError, match=message):
            decode_json(raw)


def test_decode_yaml_refuses_aliases_and_bombs_quickly() -> None:
    assert decode_yaml(b"a: [1, 2]\n") == {"a": [1, 2]}
    bomb = b'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for level in "bcdefghi":
        prev = chr(ord(level) - 1)
        bomb += (
            f"{level}: &{level} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n".encode()
        )
    start = time.process_time()
    with pytest.raises(InputError, match="anchors"):
        decode_yaml(bomb)
    assert time.process_time() - start < 1.0  # refused at the first anchor, nothing expanded
    with pytest.raises(InputError, match="aliases"):
        decode_yaml(b"a: *b\n")
    with pytest.raises(InputError, match="not valid YAML"):
        decode_yaml(b"!!python/object/apply:os.system ['true']\n")
    with pytest.raises(InputError, match="finite"):
        decode_yaml(b"x: .nan\n")
    with pytest.raises(InputError, match="nested deeper"):
        decode_yaml(b"[" * 200 + b"]" * 200)


def test_finite_numbers_and_namespaces() -> None:
    assert check_finite("timeoutSeconds", "2.5") == 2.5
    for bad in ("nan", "inf", "-1", "1e999", "x"):
        with pytest.raises(InputError, match="timeoutSeconds"):
            check_finite("timeoutSeconds", bad)
    assert check_namespace("team-a") == "team-a"
    for bad in ("..", "../x", "x?y", "a/b", "", "A", "-a", "a" * 64, "a b", "a\x00"):
        with pytest.raises(InputError, match="not a valid namespace"):
            check_namespace(bad)


def test_show_cuts_before_rendering() -> None:
    huge = {"k": ["x" * 1000] * 100_000}
    start = time.process_time()
    text = show(huge, 80)
    assert time.process_time() - start < 0.5 and len(text) <= 80 and text.endswith("...")
    nested: list[object] = []
    for _ in range(10_000):
        nested = [nested]
    assert len(show(nested, 80)) <= 80
    assert show("abc") == "'abc'" and show(3) == "3" and show({"a": 1}) == '{"a": 1}'
    assert show(10**5000).startswith("<integer")


# -- the URI rule ------------------------------------------------------------------------------


def test_uri_policy(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    (root / "files" / "team-a").mkdir(parents=True)
    (root / "files" / "team-b").mkdir(parents=True)
    (root / "files" / "team-b" / "secret.jsonl").write_text("{}")
    (root / "files" / "team-a" / "link").symlink_to(root / "files" / "team-b")
    policy = URIPolicy(root.as_uri(), {"team-a": ["s3://team-a-data/in/"], "*": ["hf://"]})
    allowed = [
        f"{root.as_uri()}/files/team-a/file-1/data.jsonl",
        f"{root.as_uri()}/finetunejobs/team-a/bot/output",
        f"{root.as_uri()}/catalog/tiny-llama",
        "s3://team-a-data/in/x.jsonl",
        "hf://org/model",
    ]
    for uri in allowed:
        policy.check(uri, "team-a")
    refused = [
        f"{root.as_uri()}/files/team-b/secret.jsonl",
        f"{root.as_uri()}/files/team-b/nonexistent",
        f"{root.as_uri()}/files/team-a/link/secret.jsonl",  # a symlink out of the prefix
        f"{root.as_uri()}/files/team-a/../team-b/secret.jsonl",
        f"{root.as_uri()}/files/team-a-evil/x",  # a sibling with the same prefix string
        "file:///etc/passwd",
        "file:///nonexistent",
        "s3://team-a-data/in/../out/x",
        "s3://team-a-data/inbox/x",
        "s3://other/in/x",
        "not a uri",
    ]
    messages = set()
    for uri in refused:
        with pytest.raises(URIRefused) as err:
            policy.check(uri, "team-a")
        messages.add(str(err.value).replace(uri[:117], "<uri>"))
    # The refusal says the same thing whether the target exists or not: no oracle.
    assert len(messages) == 1, messages
    with pytest.raises(URIRefused):
        policy.check("s3://team-a-data/in/x.jsonl", "team-b")  # another namespace's allowed prefix
    assert sorted(spec_uris({"uri": "a", "x": [{"uri": "b"}], "y": {"uri": 3}})) == [
        ("spec.uri", "a"),
        ("spec.x[0].uri", "b"),
    ]
