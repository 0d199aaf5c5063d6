"""Incremental detokenisation with stop strings, holding back text a stop string may still claim."""

from __future__ import annotations

from typing import Any


class IncrementalText:
    """Grows a choice's text token by token and decides what is safe to emit."""

    def __init__(self, tokenizer: Any, stop: list[str]) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.token_ids: list[int] = []
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def add(self, token_id: int) -> bool:
        """Append a token; return True when a stop string was hit (text is then cut before it)."""
        self.token_ids.append(token_id)
        previous = len(self.text)
        self.text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        if self.stop:
            longest = max(len(s) for s in self.stop)
            start = max(0, previous - longest + 1)
            hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
            if hits:
                self.text = self.text[: min(hits)]
                self.stopped = True
        return self.stopped

    def _safe_end(self) -> int:
        end = len(self.text)
        # an incomplete multi-byte character decodes as U+FFFD until its last byte arrives
        while end > self.emitted and self.text[end - 1] == "\ufffd":
            end -= 1
        for s in self.stop:
            for k in range(min(len(s) - 1, end - self.emitted), 0, -1):
                if self.text[end - k:end] == s[:k]:
                    end -= k
                    break
        return max(end, self.emitted)

    def delta(self, final: bool = False) -> str:
        """Text not yet emitted that can no longer change (everything when ``final``)."""
        end = len(self.text) if final else self._safe_end()
        out = self.text[self.emitted:end]
        self.emitted = end
        return out
