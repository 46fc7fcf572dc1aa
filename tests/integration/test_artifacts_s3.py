"""The s3:// store against moto in server mode on loopback, through plain boto3.

Needs the fixtures in ``tests/fixtures/s3.py`` (``pytest_plugins = ["tests.fixtures.s3"]``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import traceback
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from pydantic import SecretStr

from corral.artifacts import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactSettings,
    ArtifactStore,
    open_store,
)
from tests.fixtures.s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY, MotoS3

MiB = 1024 * 1024


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def settings(moto_s3: MotoS3) -> ArtifactSettings:
    return ArtifactSettings(
        s3_endpoint_url=moto_s3.endpoint_url,
        s3_region=moto_s3.region,
        s3_access_key_id=ACCESS_KEY_ID,
        s3_secret_access_key=SecretStr(SECRET_ACCESS_KEY),
        multipart_threshold_bytes=8 * MiB,
        multipart_chunk_bytes=8 * MiB,
    )


@pytest.fixture
def store(settings: ArtifactSettings, s3_bucket: str) -> ArtifactStore:
    return open_store(f"s3://{s3_bucket}", settings)


def test_put_get_list_delete(store: ArtifactStore, s3_bucket: str, moto_s3: MotoS3) -> None:
    uri = f"s3://{s3_bucket}/models/m1/config.json"
    data = b'{"vocab_size": 128}'
    info = store.put_bytes(data, uri)
    assert (info.uri, info.size, info.sha256) == (uri, len(data), _sha(data))
    assert store.exists(uri)
    assert store.get_bytes(uri) == data
    assert store.info(uri) == info  # from HEAD metadata, no download
    head = moto_s3.client().head_object(Bucket=s3_bucket, Key="models/m1/config.json")
    assert head["Metadata"]["sha256"] == _sha(data)

    store.put_bytes(b"2", f"s3://{s3_bucket}/models/m1/sub/b.bin")
    store.put_bytes(b"3", f"s3://{s3_bucket}/models/m10/c.bin")  # not under models/m1
    assert store.list(f"s3://{s3_bucket}/models/m1") == [
        f"s3://{s3_bucket}/models/m1/config.json",
        f"s3://{s3_bucket}/models/m1/sub/b.bin",
    ]
    assert store.list(f"s3://{s3_bucket}/models/m1/") == store.list(f"s3://{s3_bucket}/models/m1")
    assert len(store.list(f"s3://{s3_bucket}")) == 3

    store.delete(uri)
    assert not store.exists(uri)
    store.delete(uri)  # missing is not an error
    with pytest.raises(ArtifactNotFound) as excinfo:
        store.get_bytes(uri)
    assert uri in str(excinfo.value)
    with pytest.raises(ArtifactNotFound):
        store.info(uri)
    with pytest.raises(ArtifactNotFound):
        store.get_file(uri, Path("/nonexistent-dir-never-created/x"))


def test_file_round_trip_and_listing(
    store: ArtifactStore, s3_bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = os.urandom(300_000)
    src = tmp_path / "adapter.safetensors"
    src.write_bytes(data)
    uri = f"s3://{s3_bucket}/adapters/a1/adapter.safetensors"
    with caplog.at_level(logging.INFO, logger="corral.artifacts"):
        put = store.put_file(src, uri)
    assert put.sha256 == _sha(data)
    assert f"Uploaded {uri} (300 kB)" in caplog.text
    dest = tmp_path / "back" / "adapter.safetensors"
    assert store.get_file(uri, dest) == put
    assert dest.read_bytes() == data
    assert [p.name for p in dest.parent.iterdir()] == ["adapter.safetensors"]


def test_dir_round_trip(store: ArtifactStore, s3_bucket: str, tmp_path: Path) -> None:
    files = {
        "config.json": b"{}",
        "model.safetensors": os.urandom(50_000),
        "tokenizer/tokenizer.json": b'{"v": 1}',
        "checkpoints/step-10/optimizer.pt": os.urandom(1000),
    }
    src = tmp_path / "src"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    prefix = f"s3://{s3_bucket}/runs/job-7/output"
    uploaded = store.upload_dir(src, prefix)
    assert store.list(prefix) == sorted(f"{prefix}/{rel}" for rel in files)
    downloaded = store.download_dir(prefix, tmp_path / "dst")
    assert {i.uri: i.sha256 for i in downloaded} == {i.uri: i.sha256 for i in uploaded}
    for rel, data in files.items():
        assert (tmp_path / "dst" / rel).read_bytes() == data


def test_large_file_goes_multipart(store: ArtifactStore, s3_bucket: str, tmp_path: Path, moto_s3: MotoS3) -> None:
    size = 50 * MiB
    src = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with src.open("wb") as handle:
        for _ in range(size // MiB):
            block = os.urandom(MiB)
            digest.update(block)
            handle.write(block)
    uri = f"s3://{s3_bucket}/big/model.bin"
    info = store.put_file(src, uri)
    assert (info.size, info.sha256) == (size, digest.hexdigest())

    head = moto_s3.client().head_object(Bucket=s3_bucket, Key="big/model.bin")
    parts = -(-size // (8 * MiB))  # ceil: 7 parts of at most 8 MiB
    assert head["ETag"].strip('"').endswith(f"-{parts}"), head["ETag"]
    assert head["Metadata"]["sha256"] == digest.hexdigest()
    assert store.info(uri).sha256 == digest.hexdigest()

    dest = tmp_path / "big-copy.bin"
    assert store.get_file(uri, dest).sha256 == digest.hexdigest()
    assert dest.stat().st_size == size


def test_get_detects_corruption(store: ArtifactStore, s3_bucket: str, moto_s3: MotoS3) -> None:
    """An object whose content does not match its recorded sha256 is refused."""
    moto_s3.client().put_object(Bucket=s3_bucket, Key="bad.bin", Body=b"tampered", Metadata={"sha256": "0" * 64})
    with pytest.raises(ArtifactError, match="SHA-256 mismatch"):
        store.get_bytes(f"s3://{s3_bucket}/bad.bin")


def test_foreign_object_without_metadata(store: ArtifactStore, s3_bucket: str, moto_s3: MotoS3, tmp_path: Path) -> None:
    moto_s3.client().put_object(Bucket=s3_bucket, Key="plain.txt", Body=b"hello")
    uri = f"s3://{s3_bucket}/plain.txt"
    assert store.info(uri).sha256 is None
    assert store.get_file(uri, tmp_path / "p").sha256 == _sha(b"hello")


def test_missing_bucket_is_not_found(settings: ArtifactSettings, aws_env: None) -> None:
    store = open_store("s3://corral-no-such-bucket", settings)
    with pytest.raises(ArtifactNotFound, match="corral-no-such-bucket"):
        store.put_bytes(b"x", "s3://corral-no-such-bucket/k")
    with pytest.raises(ArtifactNotFound, match="does not exist"):
        store.list("s3://corral-no-such-bucket/")


def test_wrong_credentials_error_names_bucket_not_secret(
    moto_s3: MotoS3,
    s3_bucket: str,
    settings: ArtifactSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With moto's auth enforced, a bad secret fails with the bucket named and no secret leaked."""
    iam_client = boto3.client(
        "iam",
        endpoint_url=moto_s3.endpoint_url,
        region_name=moto_s3.region,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )
    user = f"corral-{s3_bucket[-8:]}"
    iam_client.create_user(UserName=user)
    iam_client.put_user_policy(
        UserName=user,
        PolicyName="s3-all",
        PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}',
    )
    key = iam_client.create_access_key(UserName=user)["AccessKey"]
    good = settings.model_copy(
        update={
            "s3_access_key_id": key["AccessKeyId"],
            "s3_secret_access_key": SecretStr(key["SecretAccessKey"]),
        }
    )
    wrong_secret = "WRONG-secret-" + "x" * 27
    bad = good.model_copy(update={"s3_secret_access_key": SecretStr(wrong_secret)})
    unknown = bad.model_copy(update={"s3_access_key_id": "AKIAUNKNOWNKEY000000"})
    uri = f"s3://{s3_bucket}/private/model.bin"
    open_store(uri, settings).put_bytes(b"weights", uri)

    calls: list[Callable[[ArtifactStore], object]] = [
        lambda s: s.get_bytes(uri),
        lambda s: s.put_bytes(b"x", uri),
        lambda s: s.info(uri),
        lambda s: s.list(f"s3://{s3_bucket}/private"),
    ]

    caplog.set_level(logging.DEBUG)  # every logger, botocore's included
    with moto_s3.enforce_auth():
        # The real secret works, so auth is enforced and the failures below are about the secret.
        assert open_store(uri, good).get_bytes(uri) == b"weights"
        for wrong, code in ((bad, "SignatureDoesNotMatch"), (unknown, "InvalidAccessKeyId")):
            for call in calls:
                store = open_store(uri, wrong)
                with pytest.raises(ArtifactError) as excinfo:
                    call(store)
                err = excinfo.value
                text = "".join(traceback.format_exception(err))
                assert s3_bucket in str(err)
                assert wrong_secret not in text
                assert key["SecretAccessKey"] not in text
                assert wrong_secret not in repr(store)
                if "HeadObject" not in str(err):  # HEAD errors carry no body, only the status
                    assert code in str(err), str(err)
                else:
                    assert "403" in str(err)
    assert wrong_secret not in caplog.text
    assert key["SecretAccessKey"] not in caplog.text


def test_settings_from_standard_aws_environment(
    moto_s3: MotoS3, s3_bucket: str, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no Corral S3 settings, boto3's chain (AWS_* variables) is used."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_s3.endpoint_url)
    monkeypatch.setenv("AWS_REGION", moto_s3.region)
    settings = ArtifactSettings.from_env({})
    assert settings.s3_endpoint_url is None and settings.s3_access_key_id is None
    uri = f"s3://{s3_bucket}/from-env.txt"
    store = open_store(uri, settings)
    store.put_bytes(b"env", uri)
    assert moto_s3.client().get_object(Bucket=s3_bucket, Key="from-env.txt")["Body"].read() == b"env"


def test_no_credentials_is_a_clear_error(
    moto_s3: MotoS3, s3_bucket: str, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = open_store(f"s3://{s3_bucket}", ArtifactSettings(s3_endpoint_url=moto_s3.endpoint_url))
    with pytest.raises(ArtifactError, match="no usable credentials"):
        store.get_bytes(f"s3://{s3_bucket}/k")


def test_unreachable_endpoint_is_a_clear_error(aws_env: None) -> None:
    # Port 9 on loopback (discard) is closed on test machines: connection refused, no network.
    settings = ArtifactSettings(s3_endpoint_url="http://127.0.0.1:9", s3_region="us-east-1", s3_max_attempts=1)
    store = open_store("s3://bucket", settings)
    with pytest.raises(ArtifactError, match=r"bucket 'some-bucket'"):
        store.exists("s3://some-bucket/key")
