"""Student (base model + trainable LoRA, or trainable weights) and teacher (any model, adapter, context)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn

from hypernet.basemodel import TargetModule, find_targets
from hypernet.lora_apply import applied_lora
from training.lora import LoraParams  # noqa: F401 - re-exported for the finetune code


def select_targets(model: nn.Module, modules: list[str], layers: int | None) -> list[TargetModule]:
    """Target Linear layers of the given types, in the top `layers` decoder layers (all when None)."""
    targets = find_targets(model, tuple(modules))
    if layers is not None:
        top = max(t.layer for t in targets)
        targets = [t for t in targets if t.layer > top - layers]
    return targets


class Student:
    """The trained policy: `active()` is the context in which `model` computes the student's distribution."""

    def __init__(self, model: nn.Module, targets: list[TargetModule], trainable: str = "lora", rank: int = 8,
                 lora_alpha: float = 16.0, seed: int = 0) -> None:
        self.model = model
        self.targets = targets
        self.trainable = trainable
        modules = dict(model.named_modules())
        # W0 of every target: the geometry report and full-weight deltas are measured against it.
        self.w0 = {t.path: modules[t.path].weight.detach().clone() for t in targets}
        self._start: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None  # set by load_start
        if trainable == "lora":
            model.requires_grad_(False)
            self.lora: LoraParams | None = LoraParams(targets, rank, lora_alpha, seed)
        elif trainable == "full":
            model.requires_grad_(False)
            for t in targets:
                modules[t.path].weight.requires_grad_(True)
            self.lora = None
        else:
            raise ValueError(f"trainable must be 'lora' or 'full', not {trainable!r}")

    def parameters(self) -> list[nn.Parameter]:
        """The trainable tensors."""
        if self.lora is not None:
            return list(self.lora.parameters())
        modules = dict(self.model.named_modules())
        return [modules[t.path].weight for t in self.targets]

    @contextmanager
    def active(self) -> Iterator[nn.Module]:
        """The model with the student's LoRA applied (a no-op for full-weight students)."""
        if self.lora is None:
            yield self.model
        else:
            with applied_lora(self.model, self.lora.tensors(), self.lora.scaling):
                yield self.model

    def load_start(self, adapter_dir: Path | str) -> None:
        """Start from a PEFT adapter (e.g. the repository's generated one); it is also the reference policy."""
        if self.lora is None:
            raise ValueError("init_adapter needs trainable='lora'")
        self.lora.load_adapter(adapter_dir)
        self._start = {p: (a.detach().clone(), b.detach().clone()) for p, (a, b) in self.lora.tensors().items()}

    def to(self, device: str) -> None:
        """Move the model, the LoRA (same Parameter objects) and the saved W0 / start tensors to `device`."""
        self.model.to(device)
        if self.lora is not None:
            self.lora.to(device)
        self.w0 = {p: w.to(device) for p, w in self.w0.items()}
        if self._start is not None:
            self._start = {p: (a.to(device), b.to(device)) for p, (a, b) in self._start.items()}

    def reference(self):
        """Context for the starting policy: the starting adapter if the run began from one, else the base without
        LoRA; full-weight students have none here."""
        if self.lora is None:
            raise ValueError("a KL to the starting policy needs a LoRA student")
        if self._start is None:
            return nullcontext(self.model)
        return applied_lora(self.model, self._start, self.lora.scaling)

    def deltas(self) -> dict[str, torch.Tensor]:
        """dW per target: scaling * B @ A for a LoRA, W - W0 for full weights (detached, float32)."""
        if self.lora is not None:
            s = self.lora.scaling
            return {p: s * (b.detach() @ a.detach()) for p, a, b in zip(self.lora.paths, self.lora.a, self.lora.b, strict=False)}
        modules = dict(self.model.named_modules())
        return {t.path: (modules[t.path].weight.detach() - self.w0[t.path]).float() for t in self.targets}

    def state(self) -> dict[str, torch.Tensor]:
        """Trainable tensors by name (resume state)."""
        if self.lora is not None:
            return {k: v.detach().clone() for k, v in self.lora.state_dict().items()}
        modules = dict(self.model.named_modules())
        return {t.path: modules[t.path].weight.detach().clone() for t in self.targets}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of `state`."""
        if self.lora is not None:
            self.lora.load_state_dict(state)
            return
        modules = dict(self.model.named_modules())
        with torch.no_grad():
            for path, w in state.items():
                modules[path].weight.copy_(w)


class Teacher:
    """A frozen model, optionally with a LoRA adapter, whose prompts may carry a context prefix (token ids)."""

    def __init__(self, model: nn.Module, context_ids: list[int] | None = None,
                 adapter: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None, scaling: float = 1.0) -> None:
        self.model = model
        self.context_ids = list(context_ids or [])
        self.adapter, self.scaling = adapter, scaling
        self._cache = None

    def context_cache(self):
        """Key/value states of the context, computed once (the teacher is frozen): teacher calls then cost
        only their own tokens."""
        from training.finetune.rollout import prefix_cache

        if self._cache is None and self.context_ids:
            self._cache = prefix_cache(self.active(), self.context_ids)
        return self._cache

    def to(self, device: str) -> None:
        """Move the model and the adapter to `device` (the context cache is built lazily, on the default device)."""
        self.model.to(device)
        if self.adapter is not None:
            self.adapter = {p: (a.to(device), b.to(device)) for p, (a, b) in self.adapter.items()}
        self._cache = None

    @classmethod
    def with_adapter(cls, model: nn.Module, adapter_dir: Path | str, context_ids: list[int] | None = None) -> Teacher:
        """A teacher = `model` + the PEFT adapter in `adapter_dir` (applied functionally)."""
        from hypernet.adapter import read_adapter, scaling

        config, tensors = read_adapter(Path(adapter_dir))
        tensors = {p: (a.float(), b.float()) for p, (a, b) in tensors.items()}
        return cls(model, context_ids, tensors, scaling(config))

    @contextmanager
    def active(self) -> Iterator[nn.Module]:
        """The teacher's model with its adapter applied (if any)."""
        if self.adapter is None:
            yield self.model
        else:
            with applied_lora(self.model, self.adapter, self.scaling):
                yield self.model
