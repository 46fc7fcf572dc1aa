"""``POST /v1/estimate``: a dry run of a FineTuneJob or ModelDeployment (nothing is created).

The body is the object (JSON, or YAML with a ``yaml`` content type), as ``corral apply``
takes it. The base model is sized from the namespace's ``Model`` of that name (its
``catalogName``) or the catalog entry of that name; trained tokens come from the job's
Datasets' validation reports (median tokens per example x examples x epochs); pools are the
store's GPUPools. The answer is :func:`corral.scheduler.dry_run_job` /
:func:`~corral.scheduler.dry_run_deployment`'s: memory per GPU, GPUs, time, cost per pool and
the pool an empty cluster would place it on (``decision``). 503 while the scheduler is not
importable.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from corral import catalog
from corral.api import DocumentError, parse_document
from corral.api._show import show
from corral.api.v1alpha1 import Dataset, FineTuneJob, GPUPool, Model, ModelDeployment
from corral.scheduler import ModelProfile, PoolState, dry_run_deployment, dry_run_job
from corral.store import NotFound, Store

from ._limits import BodyTooLarge, InputError, decode_yaml
from ._openai_common import Namespace, call_store, json_body
from ._openai_schemas import OpenAIError

__all__ = ["estimate", "estimate_router"]

log = logging.getLogger(__name__)
_SUFFIXES = ("-instruct", "-chat", "-it")


def _profile(store: Store, namespace: str, model_ref: str) -> Any:
    name = model_ref
    try:
        model = store.get(Model, namespace, model_ref)
        name = model.spec.catalog_name or model_ref
        if model.status.parameters and not model.spec.catalog_name:
            return ModelProfile.from_catalog_params(
                float(model.status.parameters), model.status.architecture or "llama", model.status.context_length
            )
    except NotFound:
        pass
    for candidate in [name] + [name[: -len(s)] for s in _SUFFIXES if name.endswith(s)]:
        try:
            entry = catalog.get(candidate)
        except KeyError:
            continue
        return ModelProfile.from_catalog_params(entry.params, entry.architecture, entry.context_length)
    raise OpenAIError(
        404,
        f"cannot size model {model_ref!r}: no Model of that name with a catalogName or parameter count in "
        f"namespace {namespace}, and no catalog entry {name!r}",
        code="model_not_found",
        param="spec",
    )


def _train_tokens(store: Store, job: FineTuneJob) -> int | None:
    total = 0
    for ref in job.spec.datasets:
        try:
            report = store.get(Dataset, job.metadata.namespace, ref.name).status.report
        except NotFound:
            return None
        if report is None or not report.examples:
            return None
        stats = {s.role: s.median for s in report.token_stats}
        per_example = stats.get("all") or sum(stats.values())
        if not per_example:
            return None
        total += report.examples * per_example
    chosen = job.status.hyperparameters
    return total * (chosen.epochs if chosen is not None else job.spec.hyperparameters.resolved().epochs)


def estimate(store: Store, namespace: str, body: Any) -> dict[str, Any]:
    """Estimate a FineTuneJob or ModelDeployment document (see the module docstring).

    Raises:
        OpenAIError: 400 for another kind or an invalid object, 404 for an unknown model.
    """
    if not isinstance(body, dict):
        raise OpenAIError(400, "the body must be a FineTuneJob or ModelDeployment object", code="invalid_request")
    body = dict(body)
    body.setdefault("apiVersion", "corral.dev/v1alpha1")
    if not isinstance(body.get("metadata") or {}, dict):
        raise OpenAIError(400, "metadata must be an object", code="invalid_value", param="metadata")
    meta = dict(body.get("metadata") or {})
    meta.setdefault("name", "estimate")
    if meta.setdefault("namespace", namespace) != namespace:
        raise OpenAIError(
            403, f"the object's namespace {show(meta['namespace'])} is not the call's ({namespace})", code="forbidden"
        )
    body["metadata"] = meta
    if body.get("kind") not in ("FineTuneJob", "ModelDeployment"):
        raise OpenAIError(
            400,
            f"kind must be FineTuneJob or ModelDeployment (got {show(body.get('kind'))})",
            code="invalid_kind",
            param="kind",
        )
    try:
        obj = parse_document(body, source="request body")
    except DocumentError as exc:
        raise OpenAIError(400, str(exc)[:4000], code="invalid_value", param="spec") from None
    pools = [PoolState.from_gpupool(p) for p in store.list(GPUPool).items]
    if isinstance(obj, FineTuneJob):
        profile = _profile(store, namespace, obj.spec.base_model.name)
        result: dict[str, Any] = dry_run_job(obj, profile, pools, train_tokens=_train_tokens(store, obj))
    else:
        assert isinstance(obj, ModelDeployment)
        result = dry_run_deployment(obj, _profile(store, namespace, obj.spec.model.name), pools)
    result["object"] = "estimate"
    decision = result.get("decision")
    result["pool"] = decision.get("pool") if isinstance(decision, dict) else None
    return result


def estimate_router() -> APIRouter:
    """The ``POST /v1/estimate`` route."""
    router = APIRouter(tags=["openai-estimate"])

    @router.post("/v1/estimate", operation_id="estimate", summary="Dry-run a FineTuneJob or ModelDeployment")
    async def estimate_route(request: Request, namespace: Namespace) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        if "yaml" in content_type:
            raw = await request.body()  # capped at 3 MiB by BodyLimitMiddleware
            try:
                body = await run_in_threadpool(decode_yaml, raw)  # off the event loop; no aliases
            except BodyTooLarge as exc:
                raise OpenAIError(
                    413, f"the YAML body is larger than {exc.limit} bytes", code="body_too_large"
                ) from None
            except InputError as exc:
                raise OpenAIError(400, str(exc), code="invalid_yaml") from None
        else:
            body = await json_body(request)
        store: Store = request.app.state.store
        return JSONResponse(await call_store(estimate, store, namespace, body))

    return router
