"""parse_uri, ArtifactURI joining, and ArtifactSettings (env parsing, secrets hidden)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from corral.artifacts import ArtifactSettings, ArtifactURI, open_store, parse_uri


@pytest.mark.parametrize(
    ("raw", "scheme", "location", "path"),
    [
        ("/data/models/a.bin", "file", "", "/data/models/a.bin"),
        ("file:///data/models/a.bin", "file", "", "/data/models/a.bin"),
        ("file://localhost/data/x", "file", "", "/data/x"),
        ("file:///data/with%20space", "file", "", "/data/with space"),
        ("/data/trailing/", "file", "", "/data/trailing"),
        ("s3://my-bucket/models/a.bin", "s3", "my-bucket", "models/a.bin"),
        ("s3://my-bucket", "s3", "my-bucket", ""),
        ("s3://my-bucket/prefix/", "s3", "my-bucket", "prefix/"),
        ("s3://my.bucket-1/a%20b", "s3", "my.bucket-1", "a%20b"),
        ("hf://corral/tiny", "hf", "corral/tiny", ""),
        ("hf://corral/tiny@v1/config.json", "hf", "corral/tiny", "config.json"),
        ("hf://corral/tiny/sub/dir/", "hf", "corral/tiny", "sub/dir"),
    ],
)
def test_parse_uri_valid(raw: str, scheme: str, location: str, path: str) -> None:
    uri = parse_uri(raw)
    assert (uri.scheme, uri.location, uri.path) == (scheme, location, path)
    assert parse_uri(str(uri)) == uri  # canonical form round-trips


def test_parse_uri_hf_revision_and_repo_type() -> None:
    uri = parse_uri("hf://datasets/org/data@refs%2Fpr%2F3/train/part-0.jsonl")
    assert uri.repo_type == "dataset"
    assert uri.repo_id == "org/data"
    assert uri.revision == "refs/pr/3"
    assert uri.path == "train/part-0.jsonl"
    assert str(uri) == "hf://datasets/org/data@refs%2Fpr%2F3/train/part-0.jsonl"
    assert parse_uri("hf://org/model").revision is None
    assert parse_uri("hf://spaces/org/app").repo_type == "space"


def test_parse_uri_s3_accessors() -> None:
    uri = parse_uri("s3://bkt/a/b/c.txt")
    assert (uri.bucket, uri.key) == ("bkt", "a/b/c.txt")
    assert str(uri) == "s3://bkt/a/b/c.txt"


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("gs://bucket/key", "'gs'"),
        ("relative/path.bin", "relative"),
        ("", "expected one of"),
        ("file://remotehost/x", "not local"),
        ("file:relative", "relative"),
        ("/a/../etc/passwd", "'..'"),
        ("s3://", "bucket"),
        ("s3://Upper_Case/key", "Upper_Case"),
        ("s3://ab/key", "'ab'"),
        ("s3://bucket/a//b", "empty path segment"),
        ("hf://onlyname", "hf://org/name"),
        ("hf://org/name@", "empty revision"),
        ("hf://org/name/../x", "bad path"),
        ("hf://org/na me", "bad repository name"),
    ],
)
def test_parse_uri_errors_name_value_and_schemes(raw: str, needle: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_uri(raw)
    message = str(excinfo.value)
    assert needle in message
    assert repr(raw) in message or raw == ""


def test_unknown_scheme_lists_allowed() -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_uri("ftp://host/file")
    for scheme in ("file://", "s3://", "hf://"):
        assert scheme in str(excinfo.value)


def test_joinpath_and_relative() -> None:
    base = parse_uri("s3://bkt/runs/job-1")
    child = base.joinpath("ckpt/step-10/model.bin")
    assert str(child) == "s3://bkt/runs/job-1/ckpt/step-10/model.bin"
    assert base.relative(child) == "ckpt/step-10/model.bin"
    assert base.relative(base) == ""
    assert str(parse_uri("s3://bkt").joinpath("a")) == "s3://bkt/a"
    assert str(parse_uri("/tmp/x").joinpath("y/z")) == "file:///tmp/x/y/z"
    hf = parse_uri("hf://org/m@v2").joinpath("a.json")
    assert str(hf) == "hf://org/m@v2/a.json"
    with pytest.raises(ValueError):
        base.joinpath("../escape")
    with pytest.raises(ValueError):
        base.joinpath("/abs")
    with pytest.raises(ValueError):
        base.relative(parse_uri("s3://bkt/runs/job-10/x"))


def test_artifact_uri_is_hashable_value() -> None:
    assert {parse_uri("/a"), ArtifactURI("file", "", "/a")} == {parse_uri("file:///a")}


def test_open_store_picks_backend() -> None:
    assert type(open_store("/tmp/x")).__name__ == "LocalStore"
    assert type(open_store("s3://bkt/k")).__name__ == "S3Store"
    assert type(open_store("hf://org/name")).__name__ == "HfStore"
    with pytest.raises(ValueError):
        open_store("gs://b/k")


# -- settings ---------------------------------------------------------------------------

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN"


def test_settings_hide_secrets_in_repr_str_and_json() -> None:
    settings = ArtifactSettings(
        s3_access_key_id="AKIAEXAMPLEKEYID",
        s3_secret_access_key=SecretStr(SECRET),
        s3_session_token=SecretStr(TOKEN),
        hf_token=SecretStr("hf_secret_token_value"),
    )
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert SECRET not in text
        assert TOKEN not in text
        assert "hf_secret_token_value" not in text
    assert "AKIAEXAMPLEKEYID" not in repr(settings)
    assert "AKIAEXAMPLEKEYID" not in str(settings)
    store = open_store("s3://bkt/k", settings)
    assert SECRET not in repr(store) and "AKIAEXAMPLEKEYID" not in repr(store)
    assert "hf_secret_token_value" not in repr(open_store("hf://o/n", settings))


def test_settings_forbid_unknown_fields_and_validate_sizes() -> None:
    with pytest.raises(ValidationError):
        ArtifactSettings(s3_endpoint="http://x")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        ArtifactSettings(multipart_chunk_bytes=1024)  # below S3's 5 MiB minimum


def test_every_field_has_a_description() -> None:
    for name, field in ArtifactSettings.model_fields.items():
        assert field.description, name


def test_settings_from_env_reads_only_corral_variables(tmp_path: Path) -> None:
    env = {
        "CORRAL_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "CORRAL_S3_REGION": "eu-west-1",
        "CORRAL_S3_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "CORRAL_S3_SECRET_ACCESS_KEY": SECRET,
        "CORRAL_S3_SESSION_TOKEN": "",  # empty = unset
        "CORRAL_MULTIPART_THRESHOLD_BYTES": "8388608",
        "CORRAL_MULTIPART_CHUNK_BYTES": "8388608",
        "CORRAL_HF_OFFLINE": "true",
        "CORRAL_HF_CACHE_DIR": str(tmp_path),
        "AWS_SECRET_ACCESS_KEY": "ignored-here",
    }
    settings = ArtifactSettings.from_env(env)
    assert settings.s3_endpoint_url == "http://127.0.0.1:9000"
    assert settings.s3_region == "eu-west-1"
    assert settings.s3_secret_access_key is not None
    assert settings.s3_secret_access_key.get_secret_value() == SECRET
    assert settings.s3_session_token is None
    assert settings.multipart_threshold_bytes == 8 * 1024 * 1024
    assert settings.hf_offline is True
    assert settings.hf_cache_dir == tmp_path
    assert ArtifactSettings.env_names()["s3_endpoint_url"] == "CORRAL_S3_ENDPOINT_URL"
    # Constructing directly never reads the environment.
    assert ArtifactSettings().s3_endpoint_url is None


def test_settings_s3_endpoint_falls_back_to_the_name_ray_pods_are_given() -> None:
    """Issue 13: the KubeRay builder gives pods AWS_ENDPOINT_URL_S3; training read only CORRAL_*."""
    pod_env = {"AWS_ENDPOINT_URL_S3": "http://minio.minio:9000", "AWS_ENDPOINT_URL": "http://other:1"}
    assert ArtifactSettings.from_env(pod_env).s3_endpoint_url == "http://minio.minio:9000"
    assert ArtifactSettings.from_env({"AWS_ENDPOINT_URL": "http://other:1"}).s3_endpoint_url == "http://other:1"
    both = {**pod_env, "CORRAL_S3_ENDPOINT_URL": "http://corral:9000"}
    assert ArtifactSettings.from_env(both).s3_endpoint_url == "http://corral:9000"
    assert ArtifactSettings.from_env({"AWS_ENDPOINT_URL_S3": ""}).s3_endpoint_url is None


def test_settings_from_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_S3_REGION", "us-west-2")
    assert ArtifactSettings.from_env().s3_region == "us-west-2"
    monkeypatch.setenv("CORRAL_MULTIPART_CHUNK_BYTES", "12")
    with pytest.raises(ValidationError):
        ArtifactSettings.from_env()


def test_validation_errors_do_not_echo_secret_values() -> None:
    with pytest.raises(ValidationError) as excinfo:
        ArtifactSettings(s3_secret_key=SECRET)  # type: ignore[call-arg]  # mistyped field name
    assert SECRET not in str(excinfo.value)
    with pytest.raises(ValidationError) as excinfo:
        ArtifactSettings.from_env({"CORRAL_S3_MAX_CONCURRENCY": SECRET})
    assert SECRET not in str(excinfo.value)
