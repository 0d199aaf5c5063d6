"""The thread that owns the model: admits queued requests and decodes all running rows together.

Iteration-level (continuous) batching: between two decode steps new requests are prefilled and
join the running batch, and finished rows leave it, so no request waits for another to finish.
Rows of different adapters share each forward pass through stacked LoRA slots (``lora_slots``).
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .base import BASE_ADAPTER, GenerationRequest, StreamDelta, TokenLogprob
from .errors import AdapterRejected, EngineClosed, EngineError, EngineStepFailed, InvalidGenerationRequest
from .kvbatch import BatchKV, tensors_to_cache
from .lora_slots import LoraSlots
from .lru import AdapterLRU
from .sampling import make_generator, sample_token, token_logprobs
from .stats import StatsRecorder
from .textstop import IncrementalText

if TYPE_CHECKING:
    from hypernet.decoding import RepoVocabulary, TokenIndex, VocabRows

log = logging.getLogger(__name__)

Sink = Callable[[object], object]  # receives StreamDelta or an Exception, from the scheduler thread


@dataclass
class Job:
    """One queued request; its ``n`` choices become ``n`` rows."""

    request: GenerationRequest
    sink: Sink
    stream: bool
    prompt_ids: list[int] = field(default_factory=list)
    remaining: int = 0
    cancelled: bool = False
    failed: bool = False  # an error was sent to the sink (at most one)
    started: float = field(default_factory=time.perf_counter)
    completion_tokens: int = 0

    @property
    def adapter_name(self) -> str:
        return self.request.adapter.id if self.request.adapter else BASE_ADAPTER


@dataclass
class Row:
    """One choice being generated."""

    job: Job
    index: int
    text: IncrementalText
    gen: torch.Generator
    n_ctx: int = 0
    last_token: int = 0
    generated: int = 0
    logprobs: list[TokenLogprob] | None = None
    done: bool = False
    vocab: VocabRows | None = None  # repository-vocabulary decoding state of this row


class Scheduler:
    """Runs on its own thread; every public method is thread-safe."""

    def __init__(self, model: Any, tokenizer: Any, slots: int, max_batch_size: int,
                 stats: StatsRecorder, device: str | torch.device = "cpu") -> None:
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.adapters = LoraSlots(model, AdapterLRU(slots))
        self.max_batch_size = max_batch_size
        self.stats = stats
        cfg = model.config
        self.max_positions = int(getattr(cfg, "max_position_embeddings", 2048))
        self.vocab_size = self._vocab_size(model)
        self.eos_ids = self._eos_ids(model, tokenizer)
        params = inspect.signature(model.forward).parameters
        self.cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self.kv = BatchKV(cfg)
        self._token_index: TokenIndex | None = None
        self._vocabs: OrderedDict[tuple[int, int, float], RepoVocabulary] = OrderedDict()
        self.rows: list[Row] = []
        self.waiting: list[Job] = []
        self.commands: list[tuple[Callable[[], Any], Future]] = []
        self.cv = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="engine-scheduler", daemon=True)

    @staticmethod
    def _vocab_size(model: Any) -> int:
        emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        size = getattr(emb, "num_embeddings", None) or getattr(model.config, "vocab_size", None)
        return int(size) if size else 2**31

    @staticmethod
    def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
        ids: set[int] = set()
        for source in (getattr(model, "generation_config", None), model.config, tokenizer):
            eos = getattr(source, "eos_token_id", None)
            if isinstance(eos, int):
                ids.add(eos)
            elif isinstance(eos, (list, tuple)):
                ids.update(int(e) for e in eos)
        return ids

    # ---- called from other threads -------------------------------------------------------
    def start(self) -> None:
        """Start the scheduler thread."""
        self.thread.start()

    def stop(self) -> None:
        """Stop the thread and fail every queued or running job."""
        with self.cv:
            self.closed = True
            self.cv.notify_all()
        if self.thread.is_alive():
            self.thread.join(timeout=30)

    def submit(self, job: Job) -> None:
        """Queue a job; its sink receives deltas, then a final delta per choice, or an exception."""
        with self.cv:
            if self.closed:
                job.sink(EngineClosed("engine is shut down"))
                return
            self.waiting.append(job)
            self.cv.notify_all()

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` on the scheduler thread between steps (adapter loads and unloads)."""
        fut: Future = Future()
        with self.cv:
            if self.closed:
                fut.set_exception(EngineClosed("engine is shut down"))
                return fut
            self.commands.append((fn, fut))
            self.cv.notify_all()
        return fut

    def counts(self) -> tuple[int, int]:
        """(queued jobs, running rows)."""
        with self.cv:
            return len(self.waiting), len(self.rows)

    # ---- scheduler thread ------------------------------------------------------------------
    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self.cv:
                    while not self.closed and not self.waiting and not self.commands and not self.rows:
                        self.cv.wait()
                    if self.closed:
                        break
                    commands, self.commands = self.commands, []
                for fn, fut in commands:
                    try:
                        fut.set_result(fn())
                    except BaseException as exc:  # the caller gets it through its future
                        fut.set_exception(exc)
                try:
                    self._step()
                except Exception as exc:  # a broken step must not kill the thread silently
                    # Prefill, decode and sampling isolate their own failures; this is the last resort
                    # (e.g. the KV bookkeeping): it fails the running rows, never the queued requests.
                    log.exception("engine step failed")
                    self._fail_running(exc)
        self._fail_all(EngineClosed("engine is shut down"))

    def _fail_all(self, exc: Exception) -> None:
        with self.cv:
            jobs = {id(r.job): r.job for r in self.rows}
            jobs.update({id(j): j for j in self.waiting})
            self.waiting = []
            self.rows = []
        self.kv = BatchKV(self.kv.config)
        for job in jobs.values():
            self._fail_job(job, exc)

    def _fail_running(self, exc: Exception) -> None:
        """Fail every running row (their shared KV cache is dropped); queued jobs stay queued."""
        with self.cv:
            jobs = {id(r.job): r.job for r in self.rows}
            self.rows = []
        self.kv = BatchKV(self.kv.config)
        for job in jobs.values():
            self._fail_job(job, exc)

    @staticmethod
    def _fail_job(job: Job, exc: Exception) -> None:
        """End one job with an error (once); its rows leave the batch at the next retire."""
        if job.failed:
            return
        job.failed = job.cancelled = True
        if not isinstance(exc, EngineError):
            exc = EngineStepFailed(f"generation failed ({type(exc).__name__}); other requests are unaffected")
        try:
            job.sink(exc)
        except Exception:  # the caller's loop is gone: nobody to tell
            log.debug("could not deliver an error to request %s", job.request.request_id, exc_info=True)

    def _step(self) -> None:
        new_rows = self._admit()
        if new_rows:
            self._prefill_isolated(new_rows)
        elif self.rows:
            self._decode_guarded()
        self._retire()

    def _admit(self) -> list[Row]:
        with self.cv:
            candidates, self.waiting = self.waiting, []
        free = self.max_batch_size - len(self.rows)
        busy = {r.job.adapter_name for r in self.rows}
        admitted: list[Job] = []
        deferred: list[Job] = []
        for job in candidates:
            if job.cancelled:
                continue
            # adapter loads happen here, outside the lock, so submitters never wait on disk I/O
            if job.request.params.n > free or not self._adapter_ready(job, busy):
                if not job.cancelled:
                    deferred.append(job)
                continue
            admitted.append(job)
            busy.add(job.adapter_name)
            free -= job.request.params.n
        with self.cv:
            self.waiting = deferred + self.waiting
        rows: list[Row] = []
        for job in admitted:
            try:
                rows.extend(self._start_job(job))
            except Exception as exc:  # a bad request fails alone, and is not lost (its caller is told)
                log.warning("request %s refused at admission: %s", job.request.request_id, exc)
                self._fail_job(job, exc)
        return rows

    def _adapter_ready(self, job: Job, busy: set[str]) -> bool:
        ref = job.request.adapter
        if ref is None:
            return True
        if ref.id in self.adapters.lru:
            self.adapters.lru.touch(ref.id)
            return True
        if self.adapters.lru.full() and self.adapters.lru.victim(busy) is None:
            return False  # every slot serves a running row: wait for one to finish
        try:
            self.adapters.load(ref.id, ref.path, busy)
        except Exception as exc:
            job.cancelled = True
            job.sink(AdapterRejected(f"cannot load adapter {ref.id!r}: {exc}", ref.id))
            return False
        return True

    def _start_job(self, job: Job) -> list[Row]:
        req = job.request
        if isinstance(req.prompt, str):
            ids = self.tokenizer(req.prompt, add_special_tokens=req.add_special_tokens).input_ids
        else:
            ids = list(req.prompt)
        if not ids:
            ids = [next(iter(self.eos_ids))] if self.eos_ids else [0]
        if len(ids) >= self.max_positions:
            raise InvalidGenerationRequest(
                f"prompt has {len(ids)} tokens; the model's context is {self.max_positions}")
        bad = next((t for t in ids if not isinstance(t, int) or not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise InvalidGenerationRequest(f"prompt token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})")
        job.prompt_ids = ids
        p = req.params
        job.remaining = p.n
        rows = []
        for i in range(p.n):
            seed = None if p.seed is None else p.seed + i
            rows.append(Row(job=job, index=i, text=IncrementalText(self.tokenizer, p.stop),
                            gen=make_generator(seed), n_ctx=len(ids),
                            logprobs=[] if p.logprobs is not None else None,
                            vocab=self._vocab_rows(req, ids)))
        return rows

    def _vocab_rows(self, req: GenerationRequest, ids: list[int]) -> VocabRows | None:
        """A row's repository-vocabulary state (None without a vocabulary); the token index is built once and
        the last few vocabularies are kept, keyed by their names and penalty."""
        from hypernet.decoding import RepoVocabulary, TokenIndex

        p = req.params
        if not p.vocabulary:
            return None
        if self._token_index is None:
            self._token_index = TokenIndex.build(self.tokenizer, self.vocab_size)
        key = (hash(p.vocabulary), len(p.vocabulary), p.vocabulary_penalty)
        vocab = self._vocabs.pop(key, None) or RepoVocabulary(self._token_index, p.vocabulary, p.vocabulary_penalty)
        self._vocabs[key] = vocab
        while len(self._vocabs) > 8:
            self._vocabs.popitem(last=False)
        prompt = req.prompt if isinstance(req.prompt, str) else self.tokenizer.decode(ids)
        return vocab.rows([prompt])

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                 cache: Any, names: list[str]) -> tuple[torch.Tensor, Any]:
        kwargs = dict(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                      position_ids=positions.to(self.device), use_cache=True, logits_to_keep=1)
        kwargs[self.cache_kwarg] = cache
        out = self.adapters.forward(names, **kwargs)
        # transformers >= 5.24 names the cache ``cache``; older releases ``past_key_values``
        new_cache = getattr(out, "cache", None)
        return out.logits[:, -1, :], new_cache if new_cache is not None else out.past_key_values

    def _prefill_isolated(self, rows: list[Row]) -> None:
        """Prefill new rows together; if that fails, prefill each request alone so only the bad one fails."""
        try:
            self._prefill(rows)
            return
        except Exception as exc:
            jobs: dict[int, list[Row]] = {}
            for r in rows:
                jobs.setdefault(id(r.job), []).append(r)
            if len(jobs) == 1:
                log.warning("prefill failed for request %s: %r", rows[0].job.request.request_id, exc)
                self._fail_job(rows[0].job, exc)
                return
        for group in jobs.values():
            try:
                self._prefill(group)
            except Exception as exc:
                log.warning("prefill failed for request %s: %r", group[0].job.request.request_id, exc)
                self._fail_job(group[0].job, exc)

    def _prefill(self, rows: list[Row]) -> None:
        """One forward pass over new rows; nothing is changed when it raises (the batch joins only after)."""
        length = max(len(r.job.prompt_ids) for r in rows)
        ids = torch.zeros((len(rows), length), dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            p = r.job.prompt_ids
            ids[i, length - len(p):] = torch.tensor(p)
            mask[i, length - len(p):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = tensors_to_cache([], self.kv.config)
        logits, cache = self._forward(ids, mask, positions, cache, [r.job.adapter_name for r in rows])
        self.kv.append(cache, mask)
        self.rows.extend(rows)
        self._consume(rows, logits)

    def _decode_guarded(self) -> None:
        try:
            self._decode()
        except Exception as exc:  # the rows of this step fail; queued requests are untouched
            log.exception("decode step failed; failing its %d rows", len(self.rows))
            self._fail_running(exc)

    def _decode(self) -> None:
        ids = torch.tensor([[r.last_token] for r in self.rows], dtype=torch.long)
        positions = torch.tensor([[r.n_ctx] for r in self.rows], dtype=torch.long)
        mask = self.kv.extend_mask()
        logits, self.kv.cache = self._forward(ids, mask, positions, self.kv.cache,
                                              [r.job.adapter_name for r in self.rows])
        for r in self.rows:
            r.n_ctx += 1
        self._consume(self.rows, logits)

    def _consume(self, rows: list[Row], logits: torch.Tensor) -> None:
        logits = logits.float().cpu()
        for r, row_logits in zip(rows, logits, strict=False):
            if r.done or r.job.cancelled:
                continue
            try:
                self._consume_row(r, row_logits)
            except Exception as exc:  # sampling or decoding one row failed: that request alone fails
                log.warning("sampling failed for request %s: %r", r.job.request.request_id, exc)
                self._fail_job(r.job, exc)

    def _consume_row(self, r: Row, row_logits: torch.Tensor) -> None:
        p = r.job.request.params
        sample_from = row_logits
        if r.vocab is not None:  # logprobs stay those of the model's own distribution
            sample_from = r.vocab.apply(row_logits[None].clone())[0]
        tok = sample_token(sample_from, p.temperature, p.top_p, r.gen)
        if r.vocab is not None:
            r.vocab.advance([tok])
        r.generated += 1
        r.job.completion_tokens += 1
        new_lp: list[TokenLogprob] = []
        if r.logprobs is not None:
            chosen, top = token_logprobs(row_logits, tok, p.logprobs or 0)
            new_lp.append(TokenLogprob(
                token=self.tokenizer.decode([tok]), token_id=tok, logprob=chosen,
                top_logprobs={self.tokenizer.decode([i]): lp for i, lp in top}))
        finish = None
        if tok in self.eos_ids and not p.ignore_eos:
            finish = "stop"
            new_lp = []
        else:
            if r.logprobs is not None:
                r.logprobs.extend(new_lp)
            if r.text.add(tok):
                finish = "stop"
            elif r.generated >= p.max_tokens or r.n_ctx + 1 >= self.max_positions:
                finish = "length"
        r.last_token = tok
        if finish:
            self._finish(r, finish, new_lp)
        elif r.job.stream:
            text = r.text.delta()
            if text or new_lp:
                r.job.sink(StreamDelta(index=r.index, text=text, token_ids=[tok],
                                       logprobs=new_lp or None))

    def _finish(self, r: Row, reason: str, last_logprobs: list[TokenLogprob]) -> None:
        r.done = True
        job = r.job
        counts: dict[str, Any] = dict(finish_reason=reason, prompt_tokens=len(job.prompt_ids), completion_tokens=r.generated)
        if job.stream:
            delta = StreamDelta(index=r.index, text=r.text.delta(final=True), token_ids=[r.last_token],
                                logprobs=last_logprobs or None, **counts)
        else:
            delta = StreamDelta(index=r.index, text=r.text.text, token_ids=list(r.text.token_ids),
                                logprobs=r.logprobs, **counts)
        job.remaining -= 1
        if job.remaining == 0:
            self.stats.record(job.adapter_name, time.perf_counter() - job.started, job.completion_tokens)
        job.sink(delta)

    def _retire(self) -> None:
        keep = [i for i, r in enumerate(self.rows) if not r.done and not r.job.cancelled]
        if len(keep) != len(self.rows):
            self.kv.keep(keep)
            with self.cv:
                self.rows = [self.rows[i] for i in keep]
        self.adapters.flush_pending({r.job.adapter_name for r in self.rows})
