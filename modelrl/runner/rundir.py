"""Run directories: where a run's config, metrics, plots and checkpoints go."""
from __future__ import annotations

import csv
import dataclasses
import time
from pathlib import Path
from typing import Any, Iterable

import yaml


def default_run_dir(algo: str, env_id: str, seed: int, root: str | Path = "runs") -> Path:
    """``runs/<algo>/<env>/<seed>-<time>/`` (``:`` and ``/`` in env ids become ``_``)."""
    safe_env = env_id.replace(":", "_").replace("/", "_")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / algo / safe_env / f"{seed}-{stamp}"


def create_run_dir(path: str | Path) -> Path:
    """Create the run directory with its ``plots/`` and ``checkpoints/`` sub-folders."""
    path = Path(path)
    (path / "plots").mkdir(parents=True, exist_ok=True)
    (path / "checkpoints").mkdir(exist_ok=True)
    return path


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
    """Appends rows to ``metrics.csv``, flushed after each row so a crash loses nothing."""

    def __init__(self, path: str | Path, columns: Iterable[str]) -> None:
        self.columns = list(columns)
        self._file = open(Path(path) / "metrics.csv", "w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns)
        self._writer.writeheader()
        self._file.flush()

    def write(self, row: dict[str, Any]) -> None:
        self._writer.writerow({k: row.get(k, "") for k in self.columns})
        self._file.flush()

    def close(self) -> None:
        self._file.close()
