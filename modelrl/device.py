"""The run-level device: one setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``) for every tensor,
module and generator of a run, and random-generator states that travel between devices."""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import warnings
from typing import Any

import torch

DEVICE_HELP = "auto (CUDA where available, else the CPU), cpu, cuda or cuda:N"


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None -> ``cuda`` when a CUDA device is present, else ``cpu``; other names are checked."""
    if isinstance(device, torch.device):
        device = str(device)
    name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use {DEVICE_HELP}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but this machine has no CUDA device (torch "
                             f"{torch.__version__}); use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type not in ("cpu", "meta", "mps"):
        raise ValueError(f"unsupported device {device!r}; use {DEVICE_HELP}")
    return dev


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h> mallopt parameters
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's largest mmap threshold on 64-bit (4 MiB x sizeof(long))
_allocator: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Ask glibc's malloc (Linux) to keep freed memory for reuse rather than hand it back to the OS at once.

    With glibc's defaults, tensors of hundreds of KB to a few MB (an ensemble layer's activations) are freed
    to the OS at the top of the heap or from their own mapping, and the next allocation faults its pages in
    again: a PETS plan at the paper's settings took 105,000-149,000 page faults (280,000 in a first probe by
    hand), and keeping the memory made it 5-6% faster (docs/benchmarks.md, "PETS at the paper's settings");
    SAC's update took 250. This sets
    malloc's mmap threshold to its maximum (32 MiB; larger blocks are still mapped) and its trim threshold
    to 1 GiB, for the process, once. Results are unchanged; memory freed by a run is kept for its next
    allocations (the process's resident size stays near its peak). Called when an agent is built on the CPU.
    Skipped where the C library is not glibc, where ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_``
    are set (the user's choice stands), and with ``MODELRL_KEEP_FREED_MEMORY=0``. Returns whether it applies."""
    if "applied" in _allocator:
        return _allocator["applied"]
    applied = False
    user_set = any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))
    if (os.environ.get("MODELRL_KEEP_FREED_MEMORY", "1") != "0" and not user_set
            and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            applied = (libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
                       and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1)
        except (OSError, AttributeError):
            applied = False
    _allocator["applied"] = applied
    return applied


def generator_state(gen: torch.Generator) -> dict[str, Any]:
    """A generator's state with the device type it belongs to (CPU and CUDA states differ in format)."""
    return {"device": gen.device.type, "state": gen.get_state()}


def load_generator_state(gen: torch.Generator, saved) -> None:
    """Restore ``saved`` (from ``generator_state``, or a bare state of older checkpoints) into ``gen``.

    Same device type: exact. Another device type (a CUDA run resumed on a CPU, or the other way
    round): the states are not interchangeable, so ``gen`` is reseeded from a hash of the saved
    state (deterministic, but not the stream the saved run would have drawn) with a warning.
    """
    if isinstance(saved, dict):
        kind, state = saved["device"], saved["state"]
    else:
        kind, state = "cpu", saved
    state = state.cpu()
    if kind == gen.device.type:
        gen.set_state(state)
        return
    seed = int.from_bytes(hashlib.sha256(state.numpy().tobytes()).digest()[:8], "little") >> 1
    gen.manual_seed(seed)
    warnings.warn(f"a random generator saved on {kind} is restored on {gen.device.type}: reseeded from the "
                  f"saved state, so random draws from here on differ from the original device's", stacklevel=2)


def _compile_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "compilation failed" (not an error of the compiled code itself)."""
    errors: list[type[BaseException]] = []
    try:
        from torch._dynamo.exc import TorchDynamoException

        errors.append(TorchDynamoException)
    except ImportError:
        pass
    try:
        from torch._inductor.exc import InductorError

        errors.append(InductorError)
    except ImportError:
        pass
    return tuple(errors)


def compiled(fn, enabled: bool = True):
    """``torch.compile(fn)`` when ``enabled``, else ``fn``. Should compilation fail (the CPU back end needs a
    C++ compiler; some platforms have none), the call runs ``fn`` eagerly from then on, with a warning, so a
    ``compile`` setting can never stop a run."""
    if not enabled:
        return fn
    errors = _compile_errors()
    # Each planning horizon of a schedule and each batch size of a lockstep evaluation whose episodes end at
    # different steps is a graph of its own: dynamo's default of 8 was used up on InvertedPendulum (TD-MPC,
    # episodic), after which new shapes ran eagerly. Raised for the process (speed only: results are the same).
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    state = {"fn": torch.compile(fn)}

    def call(*args, **kwargs):
        try:
            return state["fn"](*args, **kwargs)
        except errors as err:
            if state["fn"] is fn:
                raise
            warnings.warn(f"torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                          f"running {getattr(fn, '__qualname__', fn)} eagerly", stacklevel=2)
            state["fn"] = fn
            return fn(*args, **kwargs)

    call.__wrapped__ = fn  # type: ignore[attr-defined]  # a function takes attributes (inspect.unwrap reads this)
    return call
