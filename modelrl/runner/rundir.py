"""Run directories: where a run's config, metrics, plots and checkpoints go."""
from __future__ import annotations

import csv
import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Iterable

import yaml


def default_run_dir(algo: str, env_id: str, seed: int, root: str | Path = "runs") -> Path:
    """``runs/<algo>/<env>/<seed>-<time>/`` (``:`` and ``/`` in env ids become ``_``)."""
    safe_env = env_id.replace(":", "_").replace("/", "_")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / algo / safe_env / f"{seed}-{stamp}"


class RunDirError(ValueError):
    """A run directory that cannot be written: it holds another run, or another process is using it."""


LOCK_NAME = ".lock"


def create_run_dir(path: str | Path, checkpoints: bool = True, fresh: bool = False) -> Path:
    """Create the run directory with its ``plots/`` (and, for training, ``checkpoints/``) sub-folders.

    ``fresh``: the directory is for a new run, so it must not hold anything yet (an empty or missing
    directory is fine); a run already there is refused, never overwritten.
    """
    path = Path(path)
    if fresh and path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.name != LOCK_NAME)
        if found:
            held = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
            todo = (f"continue it with --resume {path}, or give another --out" if (path / "config.yaml").exists()
                    else "give another --out")
            raise RunDirError(f"{path} is not empty ({held}); a new run never overwrites a directory: {todo} "
                              f"(or none: runs/<algo>/<env>/<seed>-<time>/)")
    (path / "plots").mkdir(parents=True, exist_ok=True)
    if checkpoints:
        (path / "checkpoints").mkdir(exist_ok=True)
    return path


class RunLock:
    """An exclusive ``flock`` on ``<run>/.lock`` while a process writes the run directory: a second process
    that tries gets a clear error instead of mixing its files with the first one's. The kernel drops the
    lock when the process ends, also on a crash or a kill, so a stale lock never blocks a resume."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._file = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # no flock on this platform: no protection, as before
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunDirError(f"{self.path.parent} is in use by {holder}: wait for it to finish (or stop it), "
                              f"or give another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()}")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def progress_bar(enabled: bool = True):
    """The rich progress bar every long job shows: description, bar, count, elapsed, remaining."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=not enabled)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def save_config(path: str | Path, config: Any) -> None:
    """Write the resolved config (a dataclass or a dict) as ``config.yaml``."""
    with open(Path(path) / "config.yaml", "w") as f:
        yaml.safe_dump(_plain(config), f, sort_keys=False)


class MetricsWriter:
    """``metrics.csv``: base columns first, then any new key a row brings (losses appear late).

    The file is rewritten atomically after each row (runs log at most thousands of rows), so a
    crash never leaves half a row. ``keep_until`` reloads an existing file and drops the rows
    logged after that env step: what a resumed run does with rows newer than its checkpoint.
    """

    def __init__(self, path: str | Path, columns: Iterable[str], keep_until: int | None = None) -> None:
        self.path = Path(path) / "metrics.csv"
        self.columns = list(columns)
        self.rows: list[dict[str, Any]] = []
        if keep_until is not None and self.path.exists():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                for name in reader.fieldnames or []:
                    if name not in self.columns:
                        self.columns.append(name)
                self.rows = [r for r in reader if float(r.get("env_step") or 0) <= keep_until]
        self._flush()

    def write(self, row: dict[str, Any]) -> None:
        self.columns += [k for k in row if k not in self.columns]
        self.rows.append(dict(row))
        self._flush()

    def _flush(self) -> None:
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            for r in self.rows:
                writer.writerow({k: r.get(k, "") for k in self.columns})
        os.replace(tmp, self.path)

    def close(self) -> None:
        """Nothing to release: every row is already on disk."""
