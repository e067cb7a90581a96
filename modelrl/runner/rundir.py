"""Run directories: where a run's config, metrics, plots and checkpoints go.

Every file here is written atomically (``atomic_write``: a temporary file, flushed and synced, then renamed),
so a crash leaves the previous version and never half a file, and a full disk is reported as such. Files
read back (``config.yaml``, ``--config`` files, ``metrics.csv``) are checked, so a broken or hand-edited
one gives one clear line naming it.
"""
from __future__ import annotations

import csv
import dataclasses
import errno
import io
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import yaml


def default_run_dir(algo: str, env_id: str, seed: int, root: str | Path = "runs") -> Path:
    """``runs/<algo>/<env>/<seed>-<time>/`` (``:`` and ``/`` in env ids become ``_``)."""
    safe_env = env_id.replace(":", "_").replace("/", "_")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / algo / safe_env / f"{seed}-{stamp}"


class RunDirError(ValueError):
    """A run directory that cannot be written: it holds another run, or another process is using it."""


class ConfigError(ValueError):
    """A config file (a run's ``config.yaml``, a ``--config`` file) that cannot be used: missing, empty, not
    valid YAML, or not laid out as ``train:`` and ``agent:`` sections."""


class DiskFullError(OSError):
    """A run's file could not be written because its disk (or quota) is full. The message says how much the file
    needs and how much is free; the previous version of the file is intact."""


def _size(n: float) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 5e4 else "under 0.1 MB"


def _is_disk_full(err: BaseException, path: Path, needed: int) -> bool:
    """ENOSPC or EDQUOT anywhere in the exception chain; or torch's zip writer failing to write (its
    ``inline_container`` RuntimeError carries no errno) while the free space is short of what the file needs."""
    seen: set[int] = set()
    node: BaseException | None = err
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, OSError) and node.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(node, RuntimeError) and "PytorchStreamWriter failed writing" in str(node):
            return _free_bytes(path) < needed
        node = node.__cause__ or node.__context__
    return False


def _free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path.parent).free
    except OSError:
        return 0


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object], needed: Callable[[], int] | int = 0,
                 previous: str | Path | None = None) -> None:
    """Write ``path`` through ``write(f)`` into ``<path>.tmp`` (opened ``w+b``), flush and sync it to disk, then
    rename it over ``path``: a crash leaves the old file, never half a new one. ``previous``: the old file is
    first moved there (a checkpoint keeps its predecessor). Whatever fails, no ``.tmp`` file stays behind; a
    full disk raises ``DiskFullError`` with ``needed`` (bytes, or a function giving them) and the free space.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w+b") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException as err:
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if isinstance(err, Exception):
            size = max(needed() if callable(needed) else needed, written)
            if _is_disk_full(err, path, size):
                raise DiskFullError(f"the disk is full: {path} could not be written; it needs about {_size(size)} "
                                    f"and {_size(_free_bytes(path))} are free at {path.parent}. Free some space "
                                    f"(the previous {path.name}, if any, is intact)") from err
        raise
    try:  # the rename itself survives a power cut only once the directory is synced
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    """``atomic_write`` of a text file (UTF-8)."""
    data = text.encode()
    atomic_write(path, lambda f: f.write(data), len(data))


def load_yaml_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """A config YAML with ``train:`` and/or ``agent:`` sections (a run's ``config.yaml``, a ``--config`` file),
    each a mapping. Missing, empty, truncated or invalid files, and other layouts, are a ``ConfigError`` of one
    line that names the file (with the line and column of a YAML error)."""
    path = Path(path)
    return _sections(path, _yaml_mapping(path))


def read_run_config(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """A training run's ``config.yaml``, checked as ``load_yaml_config`` does, with both sections there. A
    directory without the file is a FileNotFoundError; a planning run's (no ``train:``) a ValueError."""
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    data = _yaml_mapping(path)
    if "train" not in data and "command" in data:
        raise ValueError(f"{run_dir} is not a training run (no train: section in config.yaml; `modelrl plan` runs "
                         f"have no agent to evaluate)")
    missing = [f"{name}:" for name in ("train", "agent") if name not in data]
    if missing:
        raise ConfigError(f"{path} has no {' and no '.join(missing)} section (a run's config.yaml has both: cut "
                          f"short or edited?)")
    return _sections(path, data)


def _yaml_mapping(path: Path) -> dict[Any, Any]:
    if not path.is_file():
        raise ConfigError(f"no config file at {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} cannot be read ({err})") from err
    if not text.strip():
        raise ConfigError(f"{path} is empty (a config file has train: and agent: sections; a run's config.yaml "
                          f"lists every setting of the run)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML ({problem}{where}): fix it by hand (a file cut short has "
                          f"lost its last lines)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file has the sections train: and agent:, found a "
                          f"{type(data).__name__} ({str(data)[:60]!r})")
    return data


def _sections(path: Path, data: dict[Any, Any]) -> dict[str, dict[str, Any]]:
    extra = sorted(map(str, set(data) - {"train", "agent"}))
    if extra:
        raise ConfigError(f"{path}: a config file has the sections train: and agent: only (found {', '.join(extra)})")
    for section in ("train", "agent"):
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise ConfigError(f"{path}: the {section}: section must hold field: value lines, found {data[section]!r}")
    return {k: dict(v or {}) for k, v in data.items()}


def read_metrics(path: str | Path) -> tuple[list[str], list[dict[str, str]], int]:
    """The columns and the complete rows of a ``metrics.csv``, and how many rows were left out as incomplete:
    the last one when the file ends mid-row, any with fewer or more cells than the header, or without a numeric
    ``env_step``. Such rows come from a copy cut short or a hand edit; kept, they would put blank cells or a
    wrong step into the curves (a resumed run logs them again)."""
    path = Path(path)
    if not path.exists():
        return [], [], 0
    text = path.read_text(errors="replace")
    cut = not text.endswith("\n")
    lines = list(csv.reader(io.StringIO(text)))
    dropped = 1 if cut and len(lines) > 1 else 0
    if cut:
        lines = lines[:-1]
    if not lines:
        return [], [], dropped
    header, rows = lines[0], []
    for cells in lines[1:]:
        row = dict(zip(header, cells))
        if len(cells) != len(header) or not _is_number(row.get("env_step", "")):
            dropped += 1
            continue
        rows.append(row)
    return header, rows, dropped


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
        self._file: IO[str] | None = None

    def acquire(self) -> RunLock:
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

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def progress_bar(enabled: bool = True):
    """The rich progress bar every long job shows: description, bar, count, elapsed, remaining."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

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
    """Write the resolved config (a dataclass or a dict) as ``config.yaml``, atomically."""
    atomic_write_text(Path(path) / "config.yaml", yaml.safe_dump(_plain(config), sort_keys=False))


class MetricsWriter:
    """``metrics.csv``: base columns first, then any new key a row brings (losses appear late).

    The file is rewritten atomically after each row (runs log at most thousands of rows), so a
    crash never leaves half a row. ``keep_until`` reloads an existing file and drops the rows
    logged after that env step: what a resumed run does with rows newer than its checkpoint
    (incomplete rows are dropped too, see ``read_metrics``).
    """

    def __init__(self, path: str | Path, columns: Iterable[str], keep_until: float | None = None) -> None:
        self.path = Path(path) / "metrics.csv"
        self.columns = list(columns)
        self.rows: list[dict[str, Any]] = []
        if keep_until is not None:
            found, rows, _ = read_metrics(self.path)
            self.columns += [name for name in found if name not in self.columns]
            self.rows = [r for r in rows if float(r["env_step"]) <= keep_until]
        self.flush()

    def write(self, row: dict[str, Any]) -> None:
        self.columns += [k for k in row if k not in self.columns]
        self.rows.append(dict(row))
        self.flush()

    def flush(self) -> None:
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=self.columns)
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: r.get(k, "") for k in self.columns})
        atomic_write_text(self.path, text.getvalue())

    def close(self) -> None:
        """Nothing to release: every row is already on disk."""


def load_agent(run_dir: str | Path, device: str | None = None):
    """The agent of a run directory, restored from its last checkpoint, and the run's saved config.

    The trained parts are the agent's own attributes: an MPC agent's ``dynamics`` (the learned model, a
    ``Dynamics``) and ``planner``, MBPO's ``model`` and ``sac``, TD-MPC's ``model`` (TOLD), an imitation agent's
    ``policy`` (docs/training.md, "Using a trained run in your code"). ``modelrl.load_run`` is this function.

    ``device`` (default ``auto``) need not be the one it trained on: a CUDA run loads on a CPU machine
    and the other way round."""
    from modelrl.agents import agent_classes, build_config
    from modelrl.envs import make_env
    from modelrl.runner.checkpoint import load_checkpoint
    from modelrl.runner.train import check_train_config

    run_dir = Path(run_dir)
    saved = read_run_config(run_dir)
    where = str(run_dir / "config.yaml")
    train = check_train_config(saved["train"], where)
    config_cls, agent_cls = agent_classes(train.algo)
    try:
        config = build_config(config_cls, None, **saved["agent"])
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    ckpt = load_checkpoint(run_dir / "checkpoints" / "latest.pt")  # a damaged one falls back on the previous
    env = make_env(train.env, seed=train.seed, action_repeat=train.action_repeat or 1)
    agent = agent_cls(env, config, seed=train.seed, device=device or "auto")
    agent.load_state_dict(ckpt["agent"])
    env.close()
    return agent, saved
