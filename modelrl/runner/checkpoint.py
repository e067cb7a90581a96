"""Checkpoints that resume exactly: agent, replay buffer, counters and every RNG state.

A checkpoint is ``torch.save``'s zip archive with one more record, ``.modelrl_sha256``: the SHA-256 of every
byte ``torch.save`` wrote before its index, checked on load, so flipped bits (which ``torch.load`` reads
without a word when they fall in tensor data) and files cut short are named as such. The archive stays a
plain ``torch.load``-able file, and checkpoints written before the checksum load as they are. Writes are
atomic and keep the previous checkpoint (``latest.prev.pt``), which a damaged ``latest.pt`` falls back on.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from modelrl.runner.rundir import atomic_write

CHECKSUM_RECORD = ".modelrl_sha256"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: empty, cut short, failing its checksum, or not a checkpoint at all."""


def env_rng_state(env) -> dict[str, Any]:
    """The random state an env's next ``reset()`` draws from (Gymnasium np_random; dm_control task)."""
    base = env.unwrapped
    state: dict[str, Any] = {}
    if getattr(base, "_np_random", None) is not None:
        state["np_random"] = base.np_random.bit_generator.state
    task = getattr(getattr(base, "_env", None), "task", None)
    if task is not None and hasattr(task, "random"):
        state["task_random"] = task.random.get_state()
    return state


def set_env_rng_state(env, state: dict[str, Any]) -> None:
    base = env.unwrapped
    if "np_random" in state:
        base.np_random.bit_generator.state = state["np_random"]
    if "task_random" in state:
        base._env.task.random.set_state(state["task_random"])


def global_rng_state() -> dict[str, Any]:
    """The process-wide generators: torch's CPU one, every CUDA device's (where CUDA is present), numpy, random."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Restore ``global_rng_state``; CUDA states are restored where the same number of devices exists
    (a checkpoint moved to a machine without CUDA, or with another count, keeps the CPU ones only)."""
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def previous_checkpoint(path: str | Path) -> Path:
    """Where ``save_checkpoint`` keeps the checkpoint it replaced: ``latest.pt`` -> ``latest.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: str | Path, payload: dict[str, Any], keep_previous: bool = True) -> None:
    """Write ``payload`` with its checksum, atomically (temp file, synced, renamed): a crash mid-write leaves the
    previous checkpoint, a full disk raises ``rundir.DiskFullError`` saying how many MB it needs and leaves no
    temp file. ``keep_previous``: the checkpoint replaced moves to ``previous_checkpoint(path)``."""
    path = Path(path)

    def write(f: IO[bytes]) -> None:
        torch.save(payload, f)
        _seal(f)

    atomic_write(path, write, lambda: _payload_bytes(payload), previous_checkpoint(path) if keep_previous else None)


def _seal(f: IO[bytes]) -> None:
    """Append the checksum record to the archive ``torch.save`` just wrote to ``f``."""
    f.flush()
    f.seek(0)
    with zipfile.ZipFile(f) as archive:
        end, prefix = archive.start_dir, archive.namelist()[0].split("/")[0]
    seal = {"sha256": _sha256(f, end), "bytes": end}
    with zipfile.ZipFile(f, "a") as archive:  # written where the index was; torch.load ignores the extra record
        archive.writestr(f"{prefix}/{CHECKSUM_RECORD}", json.dumps(seal))


def _sha256(f: IO[bytes], size: int) -> str:
    digest = hashlib.sha256()
    f.seek(0)
    left = size
    while left > 0:
        chunk = f.read(min(left, 1 << 20))
        if not chunk:
            break
        digest.update(chunk)
        left -= len(chunk)
    return digest.hexdigest()


def _payload_bytes(payload: Any) -> int:
    """About how many bytes ``torch.save(payload)`` writes: the tensors' and arrays' data, plus a little per object."""
    if isinstance(payload, torch.Tensor):
        return payload.element_size() * payload.numel() + 64
    if isinstance(payload, np.ndarray):
        return payload.nbytes + 64
    if isinstance(payload, (bytes, bytearray, str)):
        return len(payload) + 16
    if isinstance(payload, dict):
        return sum(_payload_bytes(k) + _payload_bytes(v) for k, v in payload.items()) + 16
    if isinstance(payload, (list, tuple)):
        return sum(_payload_bytes(v) for v in payload) + 16
    return 16


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """One checkpoint file, its checksum verified (files without one, from before it, load unchecked); every
    tensor on the CPU (``map_location``), whatever device wrote it. Anything unreadable is a ``CheckpointError``
    of one line naming the file and what is wrong with it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: the run stopped before its first checkpoint")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes)")
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
        if zipped:
            try:
                with zipfile.ZipFile(f) as archive:
                    record = next((n for n in archive.namelist() if n.endswith("/" + CHECKSUM_RECORD)), None)
                    seal = json.loads(archive.read(record)) if record is not None else None
                if seal is not None and _sha256(f, int(seal["bytes"])) != seal["sha256"]:
                    raise CheckpointError(f"{path} is corrupt: its contents do not match their SHA-256 checksum "
                                          f"(bytes changed on disk or in a copy)")
            except (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, ValueError, TypeError, OSError) as err:
                raise CheckpointError(f"{path} is cut short or damaged ({size:,} bytes; {_first_line(err)})") from None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 (a damaged pickle raises anything: EOFError, UnpicklingError, ...)
        raise CheckpointError(f"{path} cannot be read ({type(err).__name__}: {_first_line(err)})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} is not a modelrl checkpoint (it holds a {type(payload).__name__})")
    return payload


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def load_checkpoint(path: str | Path, fallback: bool = True, set_aside: bool = False) -> dict[str, Any]:
    """``read_checkpoint(path)``; agents move what they hold to their own device, so a CUDA checkpoint resumes on
    a CPU machine and back.

    ``fallback``: when ``path`` is damaged (or missing, a crash between the two renames of a save), the previous
    checkpoint is loaded instead, with a warning naming both. ``set_aside``: the damaged file is then renamed to
    ``<name>.corrupt.pt``, so the next save keeps the good previous one (a resume does this; ``eval`` only reads).
    """
    path = Path(path)
    previous = previous_checkpoint(path)
    try:
        return read_checkpoint(path)
    except (CheckpointError, FileNotFoundError) as err:
        if not fallback or not previous.exists():
            if isinstance(err, FileNotFoundError):
                raise
            raise CheckpointError(f"{err}. There is no previous checkpoint ({previous.name}) to fall back on: restore "
                                  f"the file from a backup, or start the run again with another --out") from None
        problem = f"{path} is missing (a save was stopped between its renames)" if isinstance(err, FileNotFoundError) \
            else str(err)
    try:
        payload = read_checkpoint(previous)
    except CheckpointError as err:
        raise CheckpointError(f"{problem}, and the previous checkpoint is unusable too: {err}. Restore one of them "
                              f"from a backup, or start the run again with another --out") from None
    moved = ""
    if set_aside and path.exists():
        aside = path.with_name(f"{path.stem}.corrupt{path.suffix}")
        os.replace(path, aside)
        moved = f" ({path.name} kept as {aside.name})"
    warnings.warn(f"{problem}; using the previous checkpoint {previous} (env step {payload.get('step')}) "
                  f"instead{moved}", stacklevel=2)
    return payload
