"""OpenAI-compatible routes: /v1/completions, /v1/chat/completions, /v1/models (one adapter per repository)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import select

from service.api.auth import require_api_key
from service.api.limits import rate_limit
from service.api.deps import get_state
from service.api.openai import serving
from service.api.openai.protocol import ChatCompletionRequest, CompletionRequest, ModelCard, ModelList
from service.db.models import AdapterVersion, Repository
from service.engines.base import AdapterRef
from service.engines.errors import EngineError
from service.metrics import ADAPTER_LATENCY, ADAPTER_REQUESTS, TOKENS_GENERATED
from service.serving import BASE_MODEL_ID, AdapterNotReady, ModelNotFound, Resolved, resolve_model
from service.state import ServiceState

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_api_key), Depends(rate_limit)])


def openai_error(status: int, message: str, err_type: str, param: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """A JSON response in OpenAI's error shape."""
    body = serving.error_response(message, err_type, status, param).model_dump(mode="json")
    body["error"].update(extra)
    return JSONResponse(body, status_code=status, headers=headers)


def _resolve(state: ServiceState, model: str) -> Resolved | JSONResponse:
    with state.sessions() as session:
        try:
            return resolve_model(state, session, model)
        except ModelNotFound as exc:
            return openai_error(404, str(exc), "NotFoundError", "model")
        except AdapterNotReady as exc:
            return openai_error(409, str(exc), "adapter_not_ready", "model", job=exc.job)
        except FileNotFoundError as exc:
            return openai_error(503, f"adapter artifact unavailable: {exc}", "service_unavailable",
                                headers={"Retry-After": "5"})


async def _run(http: Request, state: ServiceState, request: CompletionRequest | ChatCompletionRequest,
               chat: bool) -> Any:
    limiter = http.app.state.inflight
    if not limiter.try_enter():
        return openai_error(503, "server busy: too many completions in flight", "service_unavailable",
                            headers={"Retry-After": "2"})
    try:
        response = await _serve(state, request, chat)
    except BaseException:
        limiter.leave()
        raise
    if isinstance(response, StreamingResponse):
        # the slot is held until the stream ends
        from starlette.background import BackgroundTask

        response.background = BackgroundTask(limiter.leave)
    else:
        limiter.leave()
    return response


async def _serve(state: ServiceState, request: CompletionRequest | ChatCompletionRequest, chat: bool) -> Any:
    engine = state.serving_engine
    if engine is None:
        return openai_error(503, "no inference engine is configured (CODE2LORA_ENGINE=none)", "service_unavailable",
                            headers={"Retry-After": "30"})
    resolved = _resolve(state, request.model)
    if isinstance(resolved, JSONResponse):
        return resolved
    adapter = AdapterRef(resolved.adapter_id, resolved.path) if resolved.adapter_id else None
    label = resolved.adapter_id or BASE_MODEL_ID
    ADAPTER_REQUESTS.labels(label).inc()
    start = time.perf_counter()
    try:
        if chat:
            result = await serving.create_chat_completion(request, engine, adapter, model_name=resolved.model_name)
        else:
            result = await serving.create_completion(request, engine, adapter, model_name=resolved.model_name)
    except EngineError as exc:
        status, body, headers = serving.engine_error_to_http(exc)
        return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)
    if hasattr(result, "__aiter__"):
        return StreamingResponse(result, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    ADAPTER_LATENCY.labels(label).observe(time.perf_counter() - start)
    TOKENS_GENERATED.labels(label).inc(result.usage.completion_tokens)
    return result


@router.post("/completions")
async def completions(request: CompletionRequest, http: Request, state: ServiceState = Depends(get_state)) -> Any:
    """Text completion with the adapter of the repository named by `model` (`<repo>[@vN]`, or `base`)."""
    return await _run(http, state, request, chat=False)


@router.post("/chat/completions")
async def chat_completions(request: ChatCompletionRequest, http: Request,
                           state: ServiceState = Depends(get_state)) -> Any:
    """Chat completion (the base model's chat template) with the repository's adapter."""
    return await _run(http, state, request, chat=True)


@router.get("/models", response_model=ModelList)
def list_models(state: ServiceState = Depends(get_state)) -> ModelList:
    """The base model, every repository with a servable adapter, and each of its ready versions."""
    cards = [ModelCard(id=BASE_MODEL_ID, root=str(state.settings.base_model_path or "bundled"))]
    with state.sessions() as session:
        for repo in session.scalars(select(Repository).order_by(Repository.id)):
            current = repo.pinned_version or repo.active_version
            if current is None:
                continue
            created = int(repo.created_at.timestamp()) if repo.created_at else int(time.time())
            cards.append(ModelCard(id=repo.name, created=created, root=f"{repo.name}@v{current}", parent=BASE_MODEL_ID))
            for v in session.scalars(select(AdapterVersion).where(AdapterVersion.repository_id == repo.id,
                                                                  AdapterVersion.status == "ready")
                                     .order_by(AdapterVersion.version)):
                cards.append(ModelCard(id=f"{repo.name}@v{v.version}", created=int(v.created_at.timestamp()),
                                       root=v.artifact_path, parent=BASE_MODEL_ID))
    return ModelList(data=cards)


@router.get("/models/{model_id:path}", response_model=ModelCard)
def get_model(model_id: str, state: ServiceState = Depends(get_state)) -> Any:
    """One model card, or 404 in OpenAI's shape."""
    for card in list_models(state).data:
        if card.id == model_id:
            return card
    return openai_error(404, f"The model '{model_id}' does not exist", "NotFoundError", "model")
