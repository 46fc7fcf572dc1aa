"""``corral chat``: talk to a served model or adapter through its OpenAI-compatible endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, NamedTuple

import httpx
import typer

from ..api.v1alpha1.modeldeployment import ModelDeploymentSpec
from ..client import APIStatusError, CorralClient
from ..serving import routing_headers

__all__ = ["Endpoint", "ask", "find_endpoint", "register"]


class Endpoint(NamedTuple):
    """Where a model is served."""

    url: str
    """The OpenAI base URL (``.../v1``)."""
    deployment: str
    """The ModelDeployment's name."""
    headers: dict[str, str]
    """Headers that route the model's requests to a replica holding it (Serve model multiplexing)."""


def find_endpoint(client: CorralClient, model: str) -> Endpoint:
    """Return the endpoint of the Ready deployment that serves ``model``.

    Raises:
        LookupError: No deployment in the namespace serves ``model``; the message lists what is served.
    """
    served: list[str] = []
    for dep in client.list("modeldeployments"):
        status = dep.get("status") or {}
        names = list(status.get("servedModels") or [])
        served += names
        if model in names and status.get("endpoint"):
            headers = routing_headers(ModelDeploymentSpec.model_validate(dep["spec"]), model)
            headers.update(client.auth_headers())  # the endpoint asks for a token of its namespace
            return Endpoint(str(status["endpoint"]), str(dep["metadata"]["name"]), headers)
    listing = ", ".join(sorted(set(served))) or "nothing yet"
    raise LookupError(f"no ModelDeployment in namespace {client.namespace!r} serves {model!r} (served: {listing})")


def ask(
    endpoint: str,
    model: str,
    messages: list[dict[str, str]],
    *,
    max_tokens: int = 64,
    temperature: float = 0.0,
    timeout: float = 120.0,
    headers: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Stream the answer of ``model`` to ``messages`` chunk by chunk (OpenAI chat completions, SSE).

    ``headers`` go with the request (:attr:`Endpoint.headers` routes an adapter's requests to a
    replica that already holds it).

    Raises:
        RuntimeError: The endpoint answered with an error; its OpenAI error message is included.
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": True,
    }
    url = f"{endpoint.rstrip('/')}/chat/completions"
    with httpx.stream("POST", url, json=body, headers=dict(headers or {}), timeout=timeout) as response:
        if response.status_code != 200:
            response.read()
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise RuntimeError(f"{model}: HTTP {response.status_code}: {message}")
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line.removeprefix("data:").strip()
            if data == "[DONE]":
                return
            delta = json.loads(data)["choices"][0].get("delta", {})
            if delta.get("content"):
                yield str(delta["content"])


def chat(
    model: Annotated[str, typer.Argument(help="Served model or adapter name (see status.servedModels).")],
    message: Annotated[str | None, typer.Option("-m", "--message", help="Ask once and exit.")] = None,
    namespace: Annotated[str | None, typer.Option("-n", "--namespace", help="Namespace of the deployment.")] = None,
    system: Annotated[str | None, typer.Option("--system", help="System prompt.")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Longest answer in tokens.")] = 64,
    temperature: Annotated[float, typer.Option("--temperature", help="0 is greedy.")] = 0.0,
) -> None:
    """Chat with a served model; interactive when no --message is given (empty line or Ctrl-D quits)."""
    try:
        with CorralClient.from_context() as client:
            if namespace:
                client.namespace = namespace
            endpoint = find_endpoint(client, model)
    except (FileNotFoundError, LookupError, APIStatusError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    prompts = [message] if message is not None else None
    while True:
        if prompts is not None:
            if not prompts:
                return
            text = prompts.pop()
        else:
            try:
                text = input("you> ")
            except EOFError:
                return
            if not text.strip():
                return
        history.append({"role": "user", "content": text})
        if prompts is None:
            typer.echo(f"{model}> ", nl=False)
        answer = ""
        try:
            for chunk in ask(
                endpoint.url,
                model,
                history,
                max_tokens=max_tokens,
                temperature=temperature,
                headers=endpoint.headers,
            ):
                answer += chunk
                typer.echo(chunk, nl=False)
        except (RuntimeError, httpx.HTTPError) as exc:
            typer.echo(f"\nerror: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo()
        history.append({"role": "assistant", "content": answer})


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.command("chat")(chat)
