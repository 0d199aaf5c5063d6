"""One loader for the project's dataclass configs: a (nested) dict -> the dataclass, strict on unknown keys.

Used by `HypernetConfig.from_dict`, the hypernetwork training `TrainConfig.from_dict` and the fine-tuning
`config_from_dict`. A field whose default is a dataclass instance is built from a nested dict the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """`cls(**data)`, refusing keys `cls` does not have (ValueError naming them): a config written by newer code,
    or a typo, is never silently read as something else."""
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]  # cls is a dataclass by contract
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {unknown}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        f = known[key]
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        nested = is_dataclass(default) and not isinstance(default, type) and isinstance(value, Mapping)
        kwargs[key] = from_dict(type(default), value) if nested else value
    return cls(**kwargs)
