"""The chat endpoints' token check: digests only, the deployment's namespace only, before the body is read."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import yaml

from corral.control import DeployServe, reconcile_deployment
from corral.controlapi import TokenAuth
from corral.embedded._plane import _chat_tokens
from corral.serving import ServeAppArgs
from corral.serving._args import ChatAuthArgs
from corral.serving._chat_auth import ChatAuth, UnauthorizedError
from tests.unit.test_control_deployment import SETTINGS, deployment, world


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


TOKENS = {
    "tokens": [
        {"name": "team-a", "token": "team-a-secret", "namespaces": ["team-a"]},
        {"name": "team-b", "token": "team-b-secret", "namespaces": ["team-b"]},
        {"name": "admin", "token": "admin-secret", "namespaces": ["*"]},
    ]
}


def test_a_token_is_checked_by_its_digest() -> None:
    auth = ChatAuth([sha("team-a-secret"), sha("admin-secret")])
    auth.check("Bearer team-a-secret")
    auth.check("bearer  admin-secret ")
    for header in (None, "", "Bearer", "Bearer ", "Basic dGVhbS1h", "Bearer team-b-secret", "team-a-secret"):
        with pytest.raises(UnauthorizedError) as refused:
            auth.check(header)
        assert refused.value.status == 401 and refused.value.code == "invalid_api_key"
        assert "secret" not in refused.value.message  # a token never shows in an error
    with pytest.raises(UnauthorizedError):
        ChatAuth([]).check("Bearer team-a-secret")  # no accepted token: every call refused


def test_tokens_from_the_pods_environment_join_the_digests() -> None:
    """On a cluster the replica reads its namespace's tokens from the Secret the pods mount."""
    args = ChatAuthArgs(token_sha256=[sha("admin-secret")], tokens_env="CORRAL_CHAT_TOKENS")
    auth = ChatAuth.from_args(args, {"CORRAL_CHAT_TOKENS": "team-a-secret\n  other-secret ,third-secret\n"})
    for token in ("admin-secret", "team-a-secret", "other-secret", "third-secret"):
        auth.check(f"Bearer {token}")
    with pytest.raises(UnauthorizedError, match="not valid"):
        auth.check("Bearer team-b-secret")
    empty = ChatAuth.from_args(ChatAuthArgs(tokens_env="CORRAL_CHAT_TOKENS"), {})
    with pytest.raises(UnauthorizedError, match=r"no chat tokens are configured.*CORRAL_CHAT_TOKENS"):
        empty.check("Bearer team-a-secret")
    # The operator's settings: no digests of its own, the Secret's tokens, always a check.
    settings = dataclasses.replace(SETTINGS, chat_tokens_env="CORRAL_CHAT_TOKENS")
    assert settings.chat_token_digests("team-a") == []
    result = reconcile_deployment(deployment(), dataclasses.replace(world(), settings=settings))
    (deploy,) = [a for a in result.actions if isinstance(a, DeployServe)]
    app_args = ServeAppArgs.model_validate(deploy.config["applications"][0]["args"])
    dep = deployment()
    # The deployment is named too: whom a Kubernetes caller must be allowed to `get` (when the pods check those).
    assert app_args.auth == ChatAuthArgs(
        token_sha256=[],
        tokens_env="CORRAL_CHAT_TOKENS",
        namespace=dep.metadata.namespace,
        deployment=dep.metadata.name,
    )


def test_each_deployment_accepts_its_namespaces_tokens_and_the_admins(tmp_path: Path) -> None:
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump(TOKENS))
    chat_tokens = _chat_tokens(TokenAuth.from_file(tmp_path / "tokens.yaml"))
    settings = dataclasses.replace(SETTINGS, chat_tokens=chat_tokens)
    assert settings.chat_token_digests("team-a") == sorted([sha("team-a-secret"), sha("admin-secret")])
    assert settings.chat_token_digests("team-c") == [sha("admin-secret")]
    assert SETTINGS.chat_token_digests("team-a") is None  # no tokens configured: no check (the operator today)

    result = reconcile_deployment(deployment(), dataclasses.replace(world(), settings=settings))
    (deploy,) = [a for a in result.actions if isinstance(a, DeployServe)]
    args = ServeAppArgs.model_validate(deploy.config["applications"][0]["args"])
    assert args.auth is not None
    assert args.auth.token_sha256 == sorted([sha("team-a-secret"), sha("admin-secret")])
    assert "team-a-secret" not in str(deploy.config)  # digests only, never a token
