"""/healthz (DB, Redis, engine, queue) and /metrics (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from service.api.auth import has_api_access, require_api_key
from service.api.deps import StateDep
from service.api.schemas import HealthOut
from service.metrics import ENGINE_LOADED, QUEUE_DEPTH

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=HealthOut, response_model_exclude_none=True,
            responses={503: {"model": HealthOut}})
async def healthz(request: Request, response: Response, state: StateDep) -> HealthOut:
    """Liveness and dependencies; 503 when the database is unreachable. Open to every client (probes), but only
    clients that may use the API see the parts (adapter names, hosts, errors); others get the status alone."""
    try:
        with state.db_engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        db = {"ok": True, "dialect": state.db_engine.dialect.name}
    except Exception as exc:  # noqa: BLE001 - report, don't crash the probe
        db = {"ok": False, "dialect": state.db_engine.dialect.name, "error": str(exc)}
    cache = state.cache.health()
    if state.serving_engine is not None:
        try:
            h = await state.serving_engine.health()
            engine: dict[str, Any] = {"kind": state.settings.engine, "ok": h.ok, "detail": h.detail,
                                      "loaded": state.serving_engine.loaded()}
            if h.replicas is not None:  # several vLLM replicas: each one's health; one down makes it degraded
                engine["replicas"] = h.replicas
        except Exception as exc:  # noqa: BLE001
            engine = {"kind": state.settings.engine, "ok": False, "error": str(exc)}
    else:
        engine = {"kind": state.settings.engine, "ok": state.settings.engine == "none", "loaded": []}
    try:
        if state.queue is None:
            raise RuntimeError("this process has no job queue")
        queue: dict[str, Any] = {"kind": state.settings.queue, "ok": True, "depth": state.queue.depth()}
    except Exception as exc:  # noqa: BLE001
        queue = {"kind": state.settings.queue, "ok": False, "error": str(exc)}
    replicas_ok = all(r.get("ok") for r in engine.get("replicas") or [])
    overall = "ok" if db["ok"] and cache.get("ok") and engine.get("ok", True) and replicas_ok and queue["ok"] \
        else "degraded"
    # adapters switched off (CODE2LORA_ALLOW_ADAPTERS_OFF, the checkpoint does not fit the base model): degraded
    adapters: dict[str, Any] = {"on": state.adapters_off is None}
    if state.adapters_off is not None:
        adapters["reason"] = state.adapters_off
        overall = "degraded"
    if not db["ok"]:
        overall = "down"
        response.status_code = 503
    if not has_api_access(request, state):
        return HealthOut(status=overall)
    return HealthOut(status=overall, database=db, redis=cache, engine=engine, queue=queue, adapters=adapters)


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(require_api_key)])
def metrics(state: StateDep) -> Response:
    """Prometheus text format; gauges of queue depth and loaded adapters are read at scrape time. The same access
    as the API (loopback without keys, else a bearer key): its labels name repositories (issue 21 Low 13)."""
    try:
        if state.queue is not None:
            QUEUE_DEPTH.set(state.queue.depth())
    except Exception:  # noqa: BLE001 - Redis down: keep the last value
        pass
    if state.serving_engine is not None:
        ENGINE_LOADED.set(len(state.serving_engine.loaded()))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
