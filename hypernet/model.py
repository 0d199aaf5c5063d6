"""The Code2LoRA hypernetwork: repository context -> LoRA (A, B) for every target module of every layer.

Shape of the network (small by construction, ~2M parameters for SmolLM2-135M):
  query[l, m] = layer_emb[l] + module_emb[m]                       one query per (layer, module type)
  h = query + MLP([mean; max] of sentence vectors)                  paper-faithful pooled path
  h = h + CrossAttn(h, base-model token embeddings of the API text) token path: identifiers reach h
  h = h + MLP(h)
  A[l, m] = bound * tanh((head_A(h) @ basis_A[m]) / sqrt(K) / bound)   factorised heads: per-row
  B[l, m] = bound * tanh((head_B(h) @ basis_B[m]) / sqrt(K) / bound)   coefficients over K learned atoms
On the residual-stream side of each module (A of q/k/v/gate/up, B of o/down) `n_context_atoms` extra atoms
per (layer, module) are attention-weighted sums of the context tokens' own embeddings, so an adapter can read
or write the directions of the repository's identifiers. head_B starts at zero, so an untrained hypernet
writes B = 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from hypernet.dataconfig import from_dict

if TYPE_CHECKING:
    from hypernet.adapter import LoraTensors
    from hypernet.basemodel import TargetModule

# Modules whose input is the residual stream, and those whose output is added to it (Llama/Qwen2 naming).
READS_RESIDUAL = frozenset({"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"})
WRITES_RESIDUAL = frozenset({"o_proj", "down_proj"})
SENTENCE_DIM = 384


@dataclass
class HypernetArch:
    """The hypernetwork's own choices: what a training config's `hypernet` section sets. `HypernetConfig` adds
    the base-model signature the network is built for."""

    rank: int = 8
    lora_alpha: float = 16.0
    d_model: int = 256
    n_atoms: int = 64
    n_heads: int = 4
    atom_key_dim: int = 64
    bound: float = 0.3
    # Off by default: MiniLM over 256 items costs seconds per new repository on CPU (docs/BENCHMARKS.md),
    # the token path milliseconds; training decides per checkpoint, and the choice is stored in it.
    use_sentence: bool = False
    sentence_dim: int = SENTENCE_DIM
    use_tokens: bool = True
    token_source: str = "embeddings"  # "hidden": hidden states; "hidden_embed": hidden states + embeddings
    context_atoms: bool = True
    n_context_atoms: int = 4
    # v2 (sequence-aware reading): the base model's first `token_layers` layers over `token_chunk`-token chunks.
    token_layers: int = 0
    token_chunk: int = 0


@dataclass(kw_only=True)
class HypernetConfig(HypernetArch):
    """Everything needed to rebuild the hypernet, including the base-model signature it was built for."""

    base_model_type: str
    num_layers: int
    hidden_size: int
    targets: list[list[Any]]  # [path, module_type, layer, in_features, out_features] in model order
    extra: dict[str, Any] = field(default_factory=dict)  # provenance the trainer records (run, layers, budget)

    @classmethod
    def for_base(cls, base_config: Any, targets: list[TargetModule], **overrides: Any) -> HypernetConfig:
        """Config for a base model (`PretrainedConfig`) and its target modules; overrides set the rest."""
        rows = [[t.path, t.module_type, t.layer, t.in_features, t.out_features] for t in targets]
        return cls(
            base_model_type=str(getattr(base_config, "model_type", "unknown")),
            num_layers=int(base_config.num_hidden_layers),
            hidden_size=int(base_config.hidden_size),
            targets=rows,
            **overrides,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; fields added after v1 are left out at their defaults, so a v1 checkpoint's
        canonical config (and with it its content hash and version id) does not change."""
        out = asdict(self)
        for key, default in _V2_DEFAULTS.items():
            if out.get(key) == default:
                out.pop(key)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HypernetConfig:
        """Inverse of `to_dict`; unknown keys are an error so old code never misreads a newer format."""
        return from_dict(cls, data)

    @property
    def scaling(self) -> float:
        """LoRA scale alpha / r, as PEFT applies it."""
        return self.lora_alpha / self.rank

    @property
    def token_dim(self) -> int:
        """Width of one context token vector (the encoder's `TokenEncoder.width`)."""
        return 2 * self.hidden_size if self.token_source == "hidden_embed" else self.hidden_size

    @property
    def module_types(self) -> list[str]:
        """Module types in first-seen order."""
        return list(dict.fromkeys(row[1] for row in self.targets))


class Code2LoRAHypernet(nn.Module):
    """Context tensors -> {module path: (A [.., r, in], B [.., out, r])}; see the module docstring."""

    def __init__(self, config: HypernetConfig) -> None:
        super().__init__()
        if not (config.use_sentence or config.use_tokens):
            raise ValueError("the hypernet needs at least one context path (sentence or tokens)")
        self.config = config
        c, d, r, k = config, config.d_model, config.rank, config.n_atoms
        types = c.module_types
        shapes: dict[str, tuple[int, int]] = {}
        for path, mtype, _layer, fin, fout in c.targets:
            if shapes.setdefault(mtype, (fin, fout)) != (fin, fout):
                raise ValueError(f"{mtype} changes shape across layers ({path}); one basis per type needs one shape")
        # (layer, type) slots in target order; generation indexes them per module type.
        self._paths = [row[0] for row in c.targets]
        self.register_buffer("_slot_layer", torch.tensor([row[2] for row in c.targets]), persistent=False)
        self.register_buffer("_slot_type", torch.tensor([types.index(row[1]) for row in c.targets]), persistent=False)
        self._slots_of_type = {m: [i for i, row in enumerate(c.targets) if row[1] == m] for m in types}

        self.layer_emb = nn.Embedding(c.num_layers, d)
        self.module_emb = nn.Embedding(len(types), d)
        nn.init.normal_(self.layer_emb.weight, std=1.0)
        nn.init.normal_(self.module_emb.weight, std=1.0)
        if c.use_sentence:
            self.sentence_proj = nn.Sequential(
                nn.LayerNorm(2 * c.sentence_dim), nn.Linear(2 * c.sentence_dim, d), nn.GELU(), nn.Linear(d, d)
            )
        if c.use_tokens:
            self.token_norm = nn.LayerNorm(c.token_dim)
            self.token_proj = nn.Linear(c.token_dim, d)
            self.query_norm = nn.LayerNorm(d)
            self.cross_attn = nn.MultiheadAttention(d, c.n_heads, batch_first=True)
        self.use_context_atoms = c.use_tokens and c.context_atoms
        n_ctx = c.n_context_atoms if self.use_context_atoms else 0
        self._n_ctx = n_ctx
        if self.use_context_atoms:
            self.atom_query = nn.Linear(d, n_ctx * c.atom_key_dim)
            self.atom_key = nn.Linear(c.token_dim, c.atom_key_dim)
        self.mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.out_norm = nn.LayerNorm(d)
        # Extra coefficient columns per rank row drive the context atoms (ignored off the residual side).
        self.head_a = nn.Linear(d, r * (k + n_ctx))
        self.head_b = nn.Linear(d, r * (k + n_ctx))
        nn.init.zeros_(self.head_b.weight)
        nn.init.zeros_(self.head_b.bias)
        # Unit-norm random atoms: with coefficients ~1/sqrt(K) a row of A has norm ~1, like PEFT's init.
        self.basis_a = nn.ParameterDict({m: nn.Parameter(_unit_rows(k, shapes[m][0])) for m in types})
        self.basis_b = nn.ParameterDict({m: nn.Parameter(_unit_rows(k, shapes[m][1])) for m in types})

    def zero_b_head(self) -> None:
        """Reset the B head to zero: the generated adapter becomes a no-op."""
        with torch.no_grad():
            self.head_b.weight.zero_()
            self.head_b.bias.zero_()

    def forward(
        self,
        pooled: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
        token_log_count: torch.Tensor | None = None,
    ) -> LoraTensors:
        """Batched generation: pooled [B, 2*384], tokens [B, T, hidden], mask [B, T] (True = real token).

        `token_log_count` [B, T] (optional) is added to every attention logit over the tokens: a row standing
        for n identical tokens with log n attends exactly like the n copies (see `generate`).
        """
        c, r, k = self.config, self.config.rank, self.config.n_atoms
        batch = _batch_size(pooled, tokens)
        h = (self.layer_emb(self._slot_layer) + self.module_emb(self._slot_type)).unsqueeze(0).expand(batch, -1, -1)
        if c.use_sentence:
            if pooled is None:
                raise ValueError("this hypernet was built with the sentence path: pass pooled")
            h = h + self.sentence_proj(pooled.float()).unsqueeze(1)
        raw_tokens = None
        if c.use_tokens:
            if tokens is None:
                raise ValueError("this hypernet was built with the token path: pass tokens")
            raw_tokens = self.token_norm(tokens.float())
            memory = self.token_proj(raw_tokens)
            bias = _key_bias(token_mask, token_log_count, tokens)  # [B, T]
            attn_mask = None
            if bias is not None:  # float mask [B*heads, queries, T], added to the logits
                attn_mask = bias[:, None, :].expand(-1, h.shape[1], -1).repeat_interleave(c.n_heads, dim=0)
            attended, _ = self.cross_attn(self.query_norm(h), memory, memory, attn_mask=attn_mask, need_weights=False)
            h = h + attended
        h = self.out_norm(h + self.mlp(h))
        n_ctx = self._n_ctx
        # 1/sqrt(K + n_ctx) keeps row norms ~1; 1/bound is folded in here, on the small coefficient tensors,
        # so the large outputs see one matmul, one tanh and one scale.
        pre = 1.0 / (math.sqrt(k + n_ctx) * c.bound)
        coef_a = self.head_a(h).view(batch, -1, r, k + n_ctx) * pre
        coef_b = self.head_b(h).view(batch, -1, r, k + n_ctx) * pre
        atoms = None
        if n_ctx and raw_tokens is not None and tokens is not None:  # context atoms exist only on the token path
            atoms = self._context_atoms(h, raw_tokens, tokens, token_mask, token_log_count)

        out: LoraTensors = {}
        for mtype, slots in self._slots_of_type.items():
            idx = torch.tensor(slots, device=h.device)
            ca, cb = coef_a[:, idx], coef_b[:, idx]  # [B, L_m, r, K + n_ctx]
            basis_a, basis_b = self.basis_a[mtype], self.basis_b[mtype]
            if atoms is not None and mtype in READS_RESIDUAL:
                basis_a = torch.cat([basis_a.expand(batch, len(slots), -1, -1), atoms[:, idx]], dim=2)
            elif atoms is not None and mtype in WRITES_RESIDUAL:
                basis_b = torch.cat([basis_b.expand(batch, len(slots), -1, -1), atoms[:, idx]], dim=2)
            a = ca[..., : basis_a.shape[-2]] @ basis_a  # [B, L_m, r, in]
            b = cb[..., : basis_b.shape[-2]] @ basis_b  # [B, L_m, r, out]
            # Linear near zero, saturating at +-bound: no context can write an exploding adapter.
            a = torch.tanh(a) * c.bound
            b = (torch.tanh(b) * c.bound).transpose(-1, -2)  # [B, L_m, out, r]
            for j, slot in enumerate(slots):
                out[self._paths[slot]] = (a[:, j], b[:, j])
        return out

    def _context_atoms(
        self, h: torch.Tensor, normed: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None,
        log_count: torch.Tensor | None,
    ) -> torch.Tensor:
        """Per (layer, module) slot, `n_context_atoms` unit-scale mixes of the context tokens' embedding directions."""
        b, n = h.shape[:2]
        q = self.atom_query(h).view(b, n * self._n_ctx, -1)
        key = self.atom_key(normed)  # [B, T, dk]
        scores = q @ key.transpose(1, 2) / math.sqrt(key.shape[-1])  # [B, n * n_ctx, T]
        bias = _key_bias(mask, log_count, tokens)
        if bias is not None:
            scores = scores + bias[:, None, :]
        weights = torch.nan_to_num(scores.softmax(-1))  # an all-padding row gives zeros, not NaN
        # Atoms live in the residual stream's embedding directions: with "hidden_embed" the keys read the
        # contextual hidden half, the values are the tokens' own input embeddings (the second half).
        values = tokens[..., self.config.hidden_size :] if self.config.token_source == "hidden_embed" else tokens
        return (weights @ F.normalize(values.float(), dim=-1)).view(b, n, self._n_ctx, -1)

    @torch.no_grad()
    def generate(
        self, pooled: torch.Tensor | None = None, tokens: torch.Tensor | None = None
    ) -> LoraTensors:
        """One adapter for one context (unbatched inputs: pooled [2*384], tokens [T, hidden]).

        Input-embedding token vectors carry no position, so identical rows (repeated tokens) are merged into one
        with a log-count bias: the same attention, a fraction of the work for a 2,048-token API text.
        """
        log_count = None
        if tokens is not None and self.config.use_tokens and self.config.token_source == "embeddings":
            tokens, counts = torch.unique(tokens.float(), dim=0, return_counts=True)
            log_count = counts.float().log().unsqueeze(0)
        out = self(
            None if pooled is None else pooled.unsqueeze(0),
            None if tokens is None else tokens.unsqueeze(0),
            token_log_count=log_count,
        )
        return {path: (a[0], b[0]) for path, (a, b) in out.items()}


_V2_DEFAULTS: dict[str, Any] = {"token_layers": 0, "token_chunk": 0}


def _unit_rows(rows: int, cols: int) -> torch.Tensor:
    return F.normalize(torch.randn(rows, cols), dim=-1)


def _key_bias(mask: torch.Tensor | None, log_count: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor | None:
    """Additive attention bias over tokens [B, T]: -inf on padding, + log multiplicity on merged rows."""
    if mask is None and log_count is None:
        return None
    bias = torch.zeros(tokens.shape[:2], device=tokens.device) if log_count is None else log_count.float()
    if mask is not None:
        bias = bias.masked_fill(~mask.bool(), float("-inf"))
    return bias


def _batch_size(pooled: torch.Tensor | None, tokens: torch.Tensor | None) -> int:
    for t in (pooled, tokens):
        if t is not None:
            return t.shape[0]
    raise ValueError("no context: pass pooled and/or tokens")
