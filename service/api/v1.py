"""OpenAI-compatible routes: /v1/completions, /v1/chat/completions, /v1/models (one adapter per repository)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy import select

from service.api.auth import require_api_key
from service.api.deps import StateDep
from service.api.limits import rate_limit
from service.api.openai import serving
from service.api.openai.protocol import ChatCompletionRequest, CompletionRequest, ModelCard, ModelList
from service.db.models import AdapterVersion, Repository
from service.engines.base import AdapterRef
from service.engines.errors import EngineError
from service.metrics import ADAPTER_LATENCY, ADAPTER_REQUESTS, TOKENS_GENERATED
from service.names import adapter_name
from service.state import ServiceState
from service.store import BASE_MODEL_ID, AdapterNotReady, ModelNotFound, Resolved, resolve_model
from service.vocabulary import repo_vocabulary

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_api_key), Depends(rate_limit)])


def openai_error(status: int, message: str, err_type: str, param: str | None = None,
                 headers: Mapping[str, str] | None = None, **extra: Any) -> JSONResponse:
    """A JSON response in OpenAI's error shape."""
    body = serving.error_response(message, err_type, status, param).model_dump(mode="json")
    body["error"].update(extra)
    return JSONResponse(body, status_code=status, headers=headers)


def _resolve(state: ServiceState, model: str) -> Resolved | JSONResponse:
    with state.sessions() as session:
        try:
            return resolve_model(state, session, model)
        except ModelNotFound as exc:
            return openai_error(404, str(exc), "invalid_request_error", "model", code="model_not_found")
        except AdapterNotReady as exc:
            return openai_error(409, str(exc), "adapter_not_ready", "model", job=exc.job)
        except FileNotFoundError as exc:
            return openai_error(503, f"adapter artifact unavailable: {exc}", "service_unavailable",
                                headers={"Retry-After": "5"})


def _work(state: ServiceState, limiter: Any,
          request: CompletionRequest | ChatCompletionRequest) -> tuple[int, int] | JSONResponse:
    """(rows, requested completion tokens) of a request, or a 400 when it is over a per-request bound."""
    if isinstance(request, ChatCompletionRequest):
        prompts = 1
        explicit = request.max_completion_tokens or request.max_tokens
        max_tokens = explicit or serving.DEFAULT_CHAT_MAX_TOKENS
        context = getattr(state.serving_engine, "context_length", None)
        if explicit is None and context:
            max_tokens = min(max_tokens, context)  # the default is capped like create_chat_completion does
    else:
        prompts = len(serving.prompt_list(request.prompt))
        limit = state.settings.max_prompts_per_request
        if prompts > limit:
            return openai_error(400, f"{prompts} prompts in one request; at most {limit} are accepted "
                                "(CODE2LORA_MAX_PROMPTS_PER_REQUEST)", "invalid_request_error", "prompt")
        max_tokens = request.max_tokens or 16
    rows = prompts * request.n
    if rows > limiter.limit:
        return openai_error(400, f"this request asks for {rows} completions (prompts x n); at most "
                            f"{limiter.limit} are served at once", "invalid_request_error", "n")
    tokens = rows * max_tokens
    if limiter.token_limit is not None and tokens > limiter.token_limit:
        return openai_error(400, f"this request asks for up to {tokens} completion tokens (prompts x n x "
                            f"max_tokens); at most {limiter.token_limit} are served at once",
                            "invalid_request_error", "max_tokens")
    return rows, tokens


async def _client_gone(http: Request) -> None:
    """Returns when the client disconnects (the body is already read: only a disconnect can come)."""
    while True:
        message = await http.receive()
        if message["type"] == "http.disconnect":
            return


async def _unless_disconnected(http: Request, work: Any) -> Any:
    """Await `work`; if the client disconnects first, cancel it: its engine rows are dropped at the next step."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_client_gone(http))
    try:
        done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        watch.cancel()
        raise
    watch.cancel()
    if task in done:
        return task.result()
    task.cancel()
    try:
        await task
    except BaseException:  # noqa: BLE001 - cancelled on purpose
        pass
    log.info("client disconnected before the completion was ready: cancelled")
    return Response(status_code=499)  # nginx's "client closed request"; nobody reads it


async def _run(http: Request, state: ServiceState, request: CompletionRequest | ChatCompletionRequest) -> Any:
    limiter = http.app.state.inflight
    work = _work(state, limiter, request)
    if isinstance(work, JSONResponse):
        return work
    rows, tokens = work
    if not limiter.try_enter(rows, tokens):
        return openai_error(503, "server busy: too much completion work in flight", "service_unavailable",
                            headers={"Retry-After": "2"})

    def release() -> None:
        limiter.leave(rows, tokens)

    try:
        response = await _unless_disconnected(http, _serve(state, request))
    except BaseException:
        release()
        raise
    if isinstance(response, StreamingResponse):
        # the slot is held until the stream ends (a disconnect ends it too)
        from starlette.background import BackgroundTask

        response.background = BackgroundTask(release)
    else:
        release()
    return response


async def _vocabulary(state: ServiceState, engine: Any, request: CompletionRequest | ChatCompletionRequest,
                      resolved: Resolved) -> frozenset[str] | JSONResponse | None:
    """The names repository-vocabulary decoding keeps this request on: None where it is off (chat, the base model,
    an engine without it, a repository without a saved vocabulary); 400 where a request asks for it explicitly
    and it cannot be had."""
    asked = getattr(request, "repo_vocabulary", None)
    if not isinstance(request, CompletionRequest) or not (state.settings.repo_vocabulary if asked is None else asked):
        return None
    if resolved.repository_id is None:
        return openai_error(400, "repo_vocabulary: the base model has no repository", "invalid_request_error",
                            "repo_vocabulary") if asked else None
    if not getattr(engine, "supports_vocabulary", False):
        return openai_error(400, f"repo_vocabulary: the {engine.name} engine does not support it (the local "
                            "engine does)", "invalid_request_error", "repo_vocabulary") if asked else None
    return await asyncio.to_thread(repo_vocabulary, state, resolved.repository_id)


async def _serve(state: ServiceState, request: CompletionRequest | ChatCompletionRequest) -> Any:
    engine = state.serving_engine
    if engine is None:
        return openai_error(503, "no inference engine is configured (CODE2LORA_ENGINE=none)", "service_unavailable",
                            headers={"Retry-After": "30"})
    resolved = _resolve(state, request.model)
    if isinstance(resolved, JSONResponse):
        return resolved
    adapter = AdapterRef(resolved.adapter_id, resolved.path) if resolved.adapter_id and resolved.path else None
    vocabulary = await _vocabulary(state, engine, request, resolved)
    if isinstance(vocabulary, JSONResponse):
        return vocabulary
    label = resolved.model_name  # the public name: metric labels never carry digests
    ADAPTER_REQUESTS.labels(label).inc()
    start = time.perf_counter()
    try:
        result: Any
        if isinstance(request, ChatCompletionRequest):
            result = await serving.create_chat_completion(request, engine, adapter, model_name=resolved.model_name)
        else:
            result = await serving.create_completion(request, engine, adapter, model_name=resolved.model_name,
                                                     vocabulary=vocabulary,
                                                     vocabulary_penalty=state.settings.repo_vocabulary_penalty)
    except EngineError as exc:
        status, body, headers = serving.engine_error_to_http(exc)
        return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)
    if hasattr(result, "__aiter__"):
        return StreamingResponse(result, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    ADAPTER_LATENCY.labels(label).observe(time.perf_counter() - start)
    TOKENS_GENERATED.labels(label).inc(result.usage.completion_tokens)
    return result


@router.post("/completions")
async def completions(request: CompletionRequest, http: Request, state: StateDep) -> Any:
    """Text completion with the adapter of the repository named by `model` (`<repo>[@vN]`, or `base`)."""
    return await _run(http, state, request)


@router.post("/chat/completions")
async def chat_completions(request: ChatCompletionRequest, http: Request, state: StateDep) -> Any:
    """Chat completion (the base model's chat template) with the repository's adapter."""
    return await _run(http, state, request)


@router.get("/models", response_model=ModelList)
def list_models(state: StateDep) -> Any:
    """The base model, every repository with a servable adapter, and each of its ready versions. When adapters are
    switched off (the checkpoint does not fit the base model), every repository card says so (`adapters: "off"`) and
    the list carries the reason (`adapters_off`)."""
    models = _model_list(state)
    if not state.adapters_off:
        return models
    body = models.model_dump(mode="json")
    body["adapters_off"] = state.adapters_off
    for card in body["data"]:
        if card["id"] != BASE_MODEL_ID:
            card["adapters"] = "off"
    return JSONResponse(body)


def _model_list(state: ServiceState) -> ModelList:
    cards = [ModelCard(id=BASE_MODEL_ID)]
    with state.sessions() as session:
        for repo in session.scalars(select(Repository).order_by(Repository.id)):
            current = repo.pinned_version or repo.active_version
            if current is None:
                continue
            created = int(repo.created_at.timestamp()) if repo.created_at else int(time.time())
            cards.append(ModelCard(id=repo.name, created=created))
            for v in session.scalars(select(AdapterVersion).where(AdapterVersion.repository_id == repo.id,
                                                                  AdapterVersion.status == "ready")
                                     .order_by(AdapterVersion.version)):
                cards.append(ModelCard(id=adapter_name(repo, v.version), created=int(v.created_at.timestamp())))
    return ModelList(data=cards)


@router.get("/models/{model_id:path}", response_model=ModelCard)
def get_model(model_id: str, state: StateDep) -> Any:
    """One model card, or 404 in OpenAI's shape."""
    for card in _model_list(state).data:
        if card.id == model_id:
            return card
    return openai_error(404, f"The model '{model_id}' does not exist", "invalid_request_error", code="model_not_found")
