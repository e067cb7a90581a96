"""Protocols and small types shared by every layer (the contracts between agents, models, planners and the runner)."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Dynamics(Protocol):
    """A batched, torch model of a task: what every planner plans through.

    ``step(state[B, S], action[B, A]) -> (next_state[B, S], reward[B])``. Models of tasks that
    can end also define ``terminal(state[B, S]) -> bool[B]``; planners stop summing rewards of a
    sample once it is terminal. Learned models, the TOLD latent model and the true models all
    implement this, so every planner runs on every model.
    """

    def step(self, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor]: ...


def terminal_fn(dynamics: Dynamics):
    """The dynamics' ``terminal`` method, or None for tasks that never end."""
    fn = getattr(dynamics, "terminal", None)
    return fn if callable(fn) else None


def fresh_seed(seed: int | None) -> int:
    """``seed``, or fresh OS entropy when None (unlike ``torch.seed()``, leaves the global RNG alone)."""
    import secrets

    return int(seed) if seed is not None else secrets.randbits(62)


def as_tensor(x, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """Array-like to a tensor of the given dtype/device without a copy where possible."""
    if isinstance(x, Tensor):
        return x.to(dtype=dtype, device=device)
    return torch.as_tensor(x, dtype=dtype, device=device)


class NonFiniteError(RuntimeError):
    """A NaN or inf where a run needs a finite number. ``what`` names the boundary it crossed (``observation``
    or ``reward`` from the env, ``action`` from the agent, ``loss`` from an update), so the run loop can say
    what the likely cause is and whether resuming can help."""

    def __init__(self, message: str, what: str = "value", step: int | None = None) -> None:
        super().__init__(message)
        self.what = what
        self.step = step


def suggestions(name: str, choices, n: int = 3, cutoff: float = 0.4) -> list[str]:
    """The ``choices`` closest to a mistyped ``name`` (at most ``n``; difflib's similarity at least ``cutoff``): the
    one place every "did you mean" of the package comes from."""
    import difflib

    return difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=cutoff)


def did_you_mean(name: str, choices, n: int = 3, cutoff: float = 0.4) -> str:
    """``" Did you mean A, B?"`` for the ``suggestions``, or ``""`` when none is close."""
    close = suggestions(name, choices, n, cutoff)
    return f" Did you mean {', '.join(close)}?" if close else ""


def unknown_name(kind: str, name: str, choices, *, where: str = "", listing: str | None = None,
                 cutoff: float = 0.4) -> ValueError:
    """The error for a name that is none of ``choices``, in the one form every command uses:
    ``Unknown KIND 'NAME'WHERE. Did you mean A, B? Choose from: ...`` (``listing`` replaces the list)."""
    choices = [str(c) for c in choices]
    hint = did_you_mean(name, choices, cutoff=cutoff)
    tail = f"Choose from: {', '.join(choices)}." if listing is None else listing
    return ValueError(f"Unknown {kind} {name!r}{where}.{hint} {tail}")
