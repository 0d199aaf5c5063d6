"""Named adapters in stacked LoRA slots on one base model: hot-load, LRU eviction, mixed forward."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from .base import BASE_ADAPTER
from .lora_files import LoraWeights, slot_weights
from .lru import AdapterLRU
from .stacked_lora import BASE_SLOT, RowSlots, StackedLoRALinear


class LoraSlots:
    """Owns the stacked layers of one model; only the scheduler thread may call it."""

    def __init__(self, model: Any, lru: AdapterLRU) -> None:
        self.model = model
        self.lru = lru
        self.rows = RowSlots()
        self.layers: dict[str, StackedLoRALinear] = {}  # module path -> wrapper (created on first use)
        self.slot_of: dict[str, int] = {}  # adapter id -> slot (1..lru.slots)
        self.pending_unload: set[str] = set()
        # every slot is allocated when a layer is wrapped (as vLLM reserves max-loras up front), so a
        # hot-load never reallocates; only a higher rank does
        self._slots = lru.slots + 1  # slot 0 included
        self._rank = 0

    def load(self, adapter_id: str, path: str, busy: Iterable[str] = ()) -> None:
        """Load ``path`` as ``adapter_id`` unless present, evicting the coldest idle adapter."""
        if adapter_id == BASE_ADAPTER:
            raise ValueError(f"{BASE_ADAPTER!r} is reserved")
        self.pending_unload.discard(adapter_id)
        if adapter_id in self.lru:
            self.lru.touch(adapter_id)
            return
        lora = slot_weights(path)
        self._check(lora)  # before evicting anything: a bad adapter must not cost a good one its slot
        if self.lru.full():
            victim = self.lru.victim(set(busy))
            if victim is None:
                raise RuntimeError("all adapter slots are in use")
            self._delete(victim)
        slot = min(set(range(1, self.lru.slots + 1)) - set(self.slot_of.values()))
        self._write(slot, lora)
        self.slot_of[adapter_id] = slot
        self.lru.add(adapter_id, str(path))

    def _check(self, lora: LoraWeights) -> None:
        for module, (a, b, _) in lora.modules.items():
            layer = self.layers.get(module)
            base = layer.base if layer is not None else self._linear(module)
            if a.shape[1] != base.in_features or b.shape[0] != base.out_features:
                raise ValueError(f"{module}: LoRA shapes {tuple(a.shape)}, {tuple(b.shape)} do not fit "
                                 f"Linear({base.in_features}, {base.out_features})")

    def _linear(self, module: str) -> nn.Linear:
        try:
            found = self.model.get_submodule(module)
        except AttributeError:
            raise ValueError(f"the base model has no module {module!r}") from None
        if type(found) is not nn.Linear:
            raise ValueError(f"{module} is a {type(found).__name__}, not a Linear")
        return found

    def _write(self, slot: int, lora: LoraWeights) -> None:
        if lora.rank > self._rank:
            # rare (a higher-rank adapter than any before): lower ranks are zero-padded to the stack's
            self._rank = lora.rank
            for layer in self.layers.values():
                layer.grow_rank(self._rank)
        for module in lora.modules.keys() - self.layers.keys():
            self._wrap(module)
        for module, layer in self.layers.items():
            weights = lora.modules.get(module)
            if weights is None:
                layer.clear(slot)
            else:
                layer.write(slot, *weights)

    def _wrap(self, module: str) -> None:
        """Replace one Linear by its stacked wrapper (once per module path, on its first adapter)."""
        parent_name, _, child = module.rpartition(".")
        parent = self.model.get_submodule(parent_name) if parent_name else self.model
        layer = StackedLoRALinear(self._linear(module), self.rows, self._slots, self._rank)
        setattr(parent, child, layer)
        self.layers[module] = layer

    def unload(self, adapter_id: str, busy: Iterable[str] = ()) -> None:
        """Free an adapter's slot now, or as soon as no running row uses it."""
        if adapter_id not in self.lru:
            return
        if adapter_id in set(busy):
            self.pending_unload.add(adapter_id)
        else:
            self._delete(adapter_id)

    def flush_pending(self, busy: set[str]) -> None:
        """Carry out deferred unloads whose adapters went idle."""
        for adapter_id in list(self.pending_unload):
            if adapter_id not in busy:
                self._delete(adapter_id)

    def _delete(self, adapter_id: str) -> None:
        self.pending_unload.discard(adapter_id)
        self.lru.remove(adapter_id)
        slot = self.slot_of.pop(adapter_id, None)
        if slot is not None:
            for layer in self.layers.values():
                layer.live.discard(slot)  # no row can select it now; the next load overwrites it

    def forward(self, names: list[str], **kwargs: Any) -> Any:
        """One forward pass where row i uses adapter ``names[i]`` (``__base__`` = none)."""
        device = kwargs["input_ids"].device
        self.rows.set([self.slot_of.get(n, BASE_SLOT) for n in names], device)
        try:
            return self.model(**kwargs)
        finally:
            self.rows.clear()  # a later call outside the scheduler sees the plain base model
