"""Name -> loss function registry, so params.yaml can name losses and the config can check the names."""
from __future__ import annotations

from typing import Callable

from torch import Tensor

LossFn = Callable[..., Tensor]

LOSSES: dict[str, LossFn] = {}


def register_loss(name: str) -> Callable[[LossFn], LossFn]:
    """Decorator registering ``fn`` under ``name``; a second registration of the same name is an error
    (silently replacing a loss would make a params name mean different code depending on import order)."""

    def decorator(fn: LossFn) -> LossFn:
        if name in LOSSES:
            old = LOSSES[name]
            raise ValueError(f"loss {name!r} is already registered (by {old.__module__}.{old.__qualname__})")
        LOSSES[name] = fn
        return fn

    return decorator


def get_loss(name: str) -> LossFn:
    """Return the loss registered under ``name``.

    Raises ValueError (not KeyError) listing the known names, so pydantic validators turn it into a
    clear config error naming the key.
    """
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}") from None
