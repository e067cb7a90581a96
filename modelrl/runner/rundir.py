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


def create_run_dir(path: str | Path, checkpoints: bool = True) -> Path:
    """Create the run directory with its ``plots/`` (and, for training, ``checkpoints/``) sub-folders."""
    path = Path(path)
    (path / "plots").mkdir(parents=True, exist_ok=True)
    if checkpoints:
        (path / "checkpoints").mkdir(exist_ok=True)
    return path


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
