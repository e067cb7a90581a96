"""Labelled data sets on disk: (observation, expert action) pairs, appendable, crash-safe.

Layout of a data set directory (documented in docs/imitation.md)::

    labels/
      meta.json             {"format": "modelrl-labels", "version": 1, "obs_dim": S, "action_dim": A,
                             "chunk_size": 256, "columns": {...}}
      chunk-000000.npz      sealed chunks of exactly ``chunk_size`` rows, oldest first
      chunk-000001.npz
      open-000002.bin       the open chunk (fewer than ``chunk_size`` rows), append-only

Each ``.npz`` holds one row per label in the columns ``obs`` float32 [n, S], ``action`` float32
[n, A], ``step`` int64 [n] (the env step at which the label was asked for, -1 if unknown) and
``round`` int64 [n] (the DAgger round, -1 if unknown). The open chunk holds the same columns
as fixed-size little-endian records, one per row: S float32, A float32, then two int64. The
data set is the sealed chunks in order, then the open chunk's complete records.

Why this shape: ``append`` writes one record to the open file and flushes it (microseconds,
where rewriting a file and renaming it costs milliseconds on a busy disk), so every label is on
disk before ``append`` returns. A crash mid-write leaves at most a partial last record, which is
ignored and cut off. A full open chunk is sealed by writing ``chunk-k.npz`` atomically
(temporary file, then rename) and only then deleting ``open-k.bin``; a leftover ``open-k.bin``
beside an existing ``chunk-k.npz`` is a finished seal and is removed. So no label is lost and
none is counted twice.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

LABELS_DIR = "labels"
"""Where a run directory keeps its label data set (``<run>/labels/``)."""

FORMAT, VERSION = "modelrl-labels", 1
COLUMNS = {"obs": "float32", "action": "float32", "step": "int64", "round": "int64"}


class LabelDataset:
    """An appendable on-disk set of expert labels; ``obs``/``action``/``step``/``round`` hold all rows.

    Opening an existing directory loads its rows (a resumed run sees every label paid before
    the crash); opening a new path creates the directory and ``meta.json``; ``path=None`` keeps
    the rows in memory only. ``read_only`` refuses appends (demonstrations given to another run).
    A single ``.npz`` file with the columns above (``export``) opens read-only.
    """

    def __init__(self, path: str | Path | None, obs_dim: int | None = None, action_dim: int | None = None,
                 chunk_size: int = 256, read_only: bool = False) -> None:
        self.path = None if path is None else Path(path)
        self.read_only = read_only
        self._file: BinaryIO | None = None
        if self.path is not None and self.path.suffix == ".npz" and self.path.is_file():
            data = _load_npz(self.path)
            self.read_only, self.chunk_size = True, int(chunk_size)
            self.obs_dim, self.action_dim = data["obs"].shape[1], data["action"].shape[1]
            self._check_dims(obs_dim, action_dim)
            self._columns, self._n = data, len(data["obs"])
            return
        if self.path is None:
            if obs_dim is None or action_dim is None:
                raise ValueError("a new label data set needs obs_dim and action_dim")
            self.obs_dim, self.action_dim, self.chunk_size = int(obs_dim), int(action_dim), int(chunk_size)
            self._columns, self._n, self._sealed, self._open_n = _empty(self.obs_dim, self.action_dim), 0, 0, 0
            return
        meta_path = self.path / "meta.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != FORMAT:
                raise ValueError(f"{self.path} is not a modelrl label data set "
                                 f"(meta.json format {meta.get('format')!r})")
            if meta.get("version", 0) > VERSION:
                raise ValueError(f"{self.path} has label format version {meta['version']}; this modelrl reads "
                                 f"up to {VERSION}")
            self.obs_dim, self.action_dim = int(meta["obs_dim"]), int(meta["action_dim"])
            self.chunk_size = int(meta["chunk_size"])
            self._check_dims(obs_dim, action_dim)
        else:
            if read_only:
                raise FileNotFoundError(f"no label data set at {self.path} (no meta.json)")
            if obs_dim is None or action_dim is None:
                raise ValueError("a new label data set needs obs_dim and action_dim")
            if chunk_size < 1:
                raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
            self.obs_dim, self.action_dim, self.chunk_size = int(obs_dim), int(action_dim), int(chunk_size)
            self.path.mkdir(parents=True, exist_ok=True)
            _atomic_write(meta_path, json.dumps(
                {"format": FORMAT, "version": VERSION, "obs_dim": self.obs_dim, "action_dim": self.action_dim,
                 "chunk_size": self.chunk_size, "columns": COLUMNS}, indent=2).encode())
        self._load()

    # -- reading ---------------------------------------------------------------------------
    def _check_dims(self, obs_dim: int | None, action_dim: int | None) -> None:
        for name, want in (("obs_dim", obs_dim), ("action_dim", action_dim)):
            if want is not None and getattr(self, name) != int(want):
                raise ValueError(f"{self.path} holds {name} = {getattr(self, name)}, expected {want} "
                                 "(labels of another environment?)")

    @property
    def _record(self) -> np.dtype:
        return np.dtype([("obs", "<f4", (self.obs_dim,)), ("action", "<f4", (self.action_dim,)),
                         ("step", "<i8"), ("round", "<i8")])

    def _open_path(self, k: int) -> Path:
        assert self.path is not None  # an on-disk data set
        return self.path / f"open-{k:06d}.bin"

    def _load(self) -> None:
        assert self.path is not None  # an on-disk data set
        chunks = sorted(self.path.glob("chunk-*.npz"))
        for i, p in enumerate(chunks):
            if p.name != f"chunk-{i:06d}.npz":
                raise ValueError(f"{self.path}: sealed chunks are not numbered 0..{len(chunks) - 1} ({p.name})")
        self._sealed = len(chunks)
        for leftover in self.path.glob("open-*.bin"):  # a seal that finished but did not delete its source
            if leftover != self._open_path(self._sealed):
                leftover.unlink()
        parts = [_load_npz(p) for p in chunks]
        open_path = self._open_path(self._sealed)
        rec = self._record
        self._open_n = 0
        if open_path.exists():
            raw = open_path.read_bytes()
            whole = len(raw) // rec.itemsize
            if whole * rec.itemsize != len(raw) and not self.read_only:  # a record cut by a crash
                with open(open_path, "r+b") as f:
                    f.truncate(whole * rec.itemsize)
            records = np.frombuffer(raw[: whole * rec.itemsize], dtype=rec)
            self._open_n = whole
            dims = {"obs": (self.obs_dim,), "action": (self.action_dim,), "step": (), "round": ()}
            parts.append({k: np.asarray(records[k], dtype=COLUMNS[k]).reshape((whole,) + dims[k]) for k in COLUMNS})
        parts.append(_empty(self.obs_dim, self.action_dim))
        self._columns = {k: np.concatenate([p[k] for p in parts]) for k in COLUMNS}
        self._n = len(self._columns["obs"])
        if self._columns["obs"].shape[1:] != (self.obs_dim,) or self._columns["action"].shape[1:] != (self.action_dim,):
            raise ValueError(f"{self.path}: stored arrays do not match meta.json's obs_dim/action_dim")
        if not self.read_only and self._open_n >= self.chunk_size:  # full but never sealed
            self._seal()

    def __len__(self) -> int:
        return self._n

    @property
    def obs(self) -> np.ndarray:
        return self._columns["obs"][: self._n]

    @property
    def action(self) -> np.ndarray:
        return self._columns["action"][: self._n]

    @property
    def step(self) -> np.ndarray:
        return self._columns["step"][: self._n]

    @property
    def round(self) -> np.ndarray:
        return self._columns["round"][: self._n]

    def arrays(self, n: int | None = None) -> dict[str, np.ndarray]:
        """The first ``n`` rows (all by default) as a dict of arrays."""
        n = len(self) if n is None else min(n, len(self))
        return {k: v[:n] for k, v in self._columns.items()}

    def export(self, path: str | Path) -> Path:
        """Write all rows to one ``.npz`` file (same columns), e.g. to share a data set."""
        path = Path(path)
        _atomic_write(path, _npz_bytes(self.arrays()))
        return path

    # -- writing ---------------------------------------------------------------------------
    def append(self, obs: np.ndarray, action: np.ndarray, step: int = -1, round: int = -1) -> None:
        """Add one label; it is on disk (flushed to the OS) before this returns."""
        if self.read_only:
            raise PermissionError(f"{self.path} was opened read-only")
        obs = np.asarray(obs, dtype=np.float32).reshape(-1)
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if obs.shape[0] != self.obs_dim or action.shape[0] != self.action_dim:
            raise ValueError(f"label row has obs_dim {obs.shape[0]} / action_dim {action.shape[0]}, the data set "
                             f"stores {self.obs_dim} / {self.action_dim}")
        if self.path is not None:
            if self._file is None:
                self._file = open(self._open_path(self._sealed), "ab")
            record = np.zeros(1, dtype=self._record)
            record["obs"], record["action"], record["step"], record["round"] = obs, action, step, round
            self._file.write(record.tobytes())
            self._file.flush()
            self._open_n += 1
        if self._n == len(self._columns["obs"]):  # grow by doubling: appends cost O(1) amortised
            self._columns = {k: np.concatenate([v, np.zeros_like(v, shape=(max(len(v), 64),) + v.shape[1:])])
                             for k, v in self._columns.items()}
        self._columns["obs"][self._n], self._columns["action"][self._n] = obs, action
        self._columns["step"][self._n], self._columns["round"][self._n] = step, round
        self._n += 1
        if self.path is not None and self._open_n >= self.chunk_size:
            self._seal()

    def _seal(self) -> None:
        """The open chunk becomes ``chunk-k.npz`` (atomic), then its ``open-k.bin`` goes."""
        assert self.path is not None  # an on-disk data set
        if self._file is not None:
            self._file.close()
            self._file = None
        k, n = self._sealed, self._open_n
        rows = {key: v[self._n - n: self._n] for key, v in self._columns.items()}
        _atomic_write(self.path / f"chunk-{k:06d}.npz", _npz_bytes(rows))
        self._open_path(k).unlink()
        self._sealed, self._open_n = k + 1, 0

    def close(self) -> None:
        """Close the open chunk's file (appends reopen it)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __del__(self) -> None:
        self.close()


def _empty(obs_dim: int, action_dim: int) -> dict[str, np.ndarray]:
    return {"obs": np.zeros((0, obs_dim), np.float32), "action": np.zeros((0, action_dim), np.float32),
            "step": np.zeros(0, np.int64), "round": np.zeros(0, np.int64)}


def _npz_bytes(columns: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **columns)  # type: ignore[arg-type]  # column names: none is savez's allow_pickle
    return buf.getvalue()


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        missing = [k for k in COLUMNS if k not in data]
        if missing:
            raise ValueError(f"{path} lacks column(s) {', '.join(missing)}")
        return {k: data[k].astype(COLUMNS[k], copy=False) for k in COLUMNS}


def _atomic_write(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(payload)
    os.replace(tmp, path)
