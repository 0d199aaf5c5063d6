"""Slot bookkeeping for loaded adapters: least-recently-used order and pinning."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable


class AdapterLRU:
    """Ordered set of loaded adapter ids (oldest first) with a slot limit; not thread-safe."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.slots = slots
        self._items: OrderedDict[str, str] = OrderedDict()  # id -> path

    def __contains__(self, adapter_id: str) -> bool:
        return adapter_id in self._items

    def __len__(self) -> int:
        return len(self._items)

    def ids(self) -> list[str]:
        """Loaded ids, least recently used first."""
        return list(self._items)

    def items(self) -> list[tuple[str, str]]:
        """(id, path) pairs, least recently used first."""
        return list(self._items.items())

    def path(self, adapter_id: str) -> str | None:
        """Folder an adapter was loaded from."""
        return self._items.get(adapter_id)

    def touch(self, adapter_id: str) -> None:
        """Mark an adapter as just used."""
        self._items.move_to_end(adapter_id)

    def add(self, adapter_id: str, path: str) -> None:
        """Record a loaded adapter as most recently used."""
        self._items[adapter_id] = path
        self._items.move_to_end(adapter_id)

    def remove(self, adapter_id: str) -> None:
        """Forget an adapter (no-op if absent)."""
        self._items.pop(adapter_id, None)

    def clear(self) -> None:
        """Forget every adapter."""
        self._items.clear()

    def victim(self, busy: Iterable[str] | Callable[[str], bool] = ()) -> str | None:
        """Least recently used id that is not busy, or None when every loaded adapter is busy."""
        is_busy = busy if callable(busy) else set(busy).__contains__
        for adapter_id in self._items:
            if not is_busy(adapter_id):
                return adapter_id
        return None

    def full(self) -> bool:
        """Whether loading one more adapter needs an eviction first."""
        return len(self._items) >= self.slots
