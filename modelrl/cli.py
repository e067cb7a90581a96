"""The ``modelrl`` command line: ``train``, ``eval``, ``plan``, ``plot``, ``diagnose``, ``sweep``, ``bench``.

Configs are typed dataclasses parsed by tyro, so every field is a flag; ``modelrl COMMAND --help``
lists them. ``train`` and ``bench`` are dispatched by hand (the algorithm decides ``train``'s
fields; ``bench`` passes its arguments to the benchmark script); the rest go through tyro. Mistyped options and
names outside an option's fixed choices are refused before tyro parses (``check_options``), in the same form as
every other bad name: ``Unknown option '--horizn' for modelrl plan. Did you mean --horizon? ...``.

Every command reports a failure the same way (``main``): one ``error: ...`` line, exit status 2 for
bad input (a value, a file, a name) and 1 for a fault while running (a damaged checkpoint, a full
disk, NaN in training); ``MODELRL_DEBUG=1`` prints the traceback too.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import traceback
import types
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro
import yaml

from modelrl.types import unknown_name

PlannerName = Literal["mppi", "cem", "icem", "random_shooting", "ilqr", "lqr"]

BAD_INPUT, RUNTIME_FAULT = 2, 1
"""Exit statuses: a command given something it cannot use, and one that failed while running."""


def print_error(console, err: BaseException | str) -> None:
    """``error: <message>`` in red on one line (never wrapped), the message printed as it is (rich markup would
    swallow text in square brackets, such as a value list ``[nan]``)."""
    from rich.markup import escape

    console.print(f"[red]error:[/red] {escape(_one_line(str(err)))}", soft_wrap=True)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def exit_status(err: BaseException) -> int:
    """2 for bad input (ValueError, a missing file), 1 for a fault while running (anything else)."""
    return BAD_INPUT if isinstance(err, (ValueError, FileNotFoundError, NotADirectoryError)) else RUNTIME_FAULT


def report_error(console, err: Exception) -> int:
    """Print ``err`` as one ``error:`` line (after its traceback with ``MODELRL_DEBUG=1``); the exit status.

    Errors that are not this project's way of refusing or failing (a TypeError, a KeyError: a bug) also
    name their type, and how to see where they came from."""
    if os.environ.get("MODELRL_DEBUG", "") not in ("", "0"):
        traceback.print_exception(err, file=sys.stderr)
    message = str(err) or type(err).__name__
    if not isinstance(err, (ValueError, OSError, RuntimeError)):
        message = f"{type(err).__name__}: {message} (unexpected; MODELRL_DEBUG=1 shows the traceback)"
    print_error(console, message)
    return exit_status(err)


def _show_warning(console) -> Callable[..., None]:
    """``warnings.showwarning`` for the command line: ``warning: <message>`` on one line, no source line."""
    from rich.markup import escape

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        console.print(f"[yellow]warning:[/yellow] {escape(_one_line(str(message)))}", soft_wrap=True)

    return show

@dataclasses.dataclass
class PlanArgs:
    """Closed-loop MPC with a planner on an env's true model; prints returns, writes a run directory."""

    planner: Annotated[PlannerName, tyro.conf.Positional]
    """Which planner. lqr needs an env whose true model is linear (LinearDynamics); no built-in env has one."""
    env: str = "Pendulum-v1"
    """Environment with a known torch model: Pendulum-v1, CartPoleSwingUp-v0 or one of register_true_dynamics."""
    episodes: int = 10
    """Number of episodes; episode i resets with seed + i."""
    seed: int = 0
    """Seed of the planner's random draws; episode i's environment resets with seed + i."""
    out: Path | None = None
    """Run directory (default runs/<planner>/<env>/<seed>-<time>/)."""
    max_steps: int | None = None
    """Steps per episode (default: the env's time limit)."""
    horizon: int | None = None
    """Planning horizon H (default: the planner's or the env preset's)."""
    num_samples: int | None = None
    """Sampled action sequences per iteration (random_shooting, cem, mppi)."""
    iterations: int | None = None
    """Optimisation iterations per control step (cem, mppi, ilqr)."""
    temperature: float | None = None
    """MPPI temperature lambda."""
    noise_sigma: float | None = None
    """MPPI noise standard deviation (normalised action units)."""
    num_elites: int | None = None
    """Elites kept (cem) or top-k weighted (mppi)."""
    opt: tuple[str, ...] = ()
    """Any other planner setting as KEY=VALUE, read as YAML (e.g. --opt momentum=0.2 noise_beta=2.0 compile=true)."""
    no_save: Annotated[bool, tyro.conf.FlagCreatePairsOff] = False
    """Do not write a run directory."""
    device: str = "auto"
    """Where the planner samples and rolls out: auto (CUDA where available), cpu, cuda or cuda:N."""


def _planner_overrides(args: PlanArgs) -> dict:
    names = ("horizon", "num_samples", "iterations", "temperature", "noise_sigma", "num_elites")
    from modelrl.runner.options import parse_assignments

    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    overrides.update(parse_assignments(args.opt, "--opt"))  # names and types are checked by run_plan
    return overrides


def plan(args: PlanArgs) -> int:
    from rich.console import Console
    from rich.table import Table

    from modelrl.runner.plan import run_plan

    console = Console()
    result = run_plan(args.planner, args.env, episodes=args.episodes, seed=args.seed,
                      planner_kwargs=_planner_overrides(args), out=args.out, max_steps=args.max_steps,
                      save=not args.no_save, device=args.device)
    table = Table(title=f"{args.planner} on {args.env}")
    for col in ("episode", "return", "steps", "ms/action"):
        table.add_column(col, justify="right")
    for i, (r, n, ms) in enumerate(zip(result.returns, result.lengths, result.ms_per_action)):
        table.add_row(str(i), f"{r:.1f}", str(n), f"{ms:.2f}")
    import numpy as np

    table.add_row("mean", f"{np.mean(result.returns):.1f} ± {np.std(result.returns):.1f}", "",
                  f"{result.mean_ms_per_action:.2f}", style="bold")
    console.print(table)
    if result.compile_s is not None:
        console.print(f"compile (warm-up): {result.compile_s:.1f} s, the first action's planning time, which "
                      f"ms/action leaves out", soft_wrap=True)
    if result.run_dir is not None:
        console.print(f"run directory: {result.run_dir} (metrics.csv, summary.json, plots/returns.png)")
    return 0


@dataclasses.dataclass
class TrainHelp:
    """Train an agent and write a run directory; `modelrl train ALGO --help` lists ALGO's fields and presets."""

    algo: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="ALGO")]
    """Algorithm, then --env ENV --steps N [--seed S] [--preset P] [--config F.yaml] [--resume RUN] [--<field> V]."""


@dataclasses.dataclass
class LoopArgs:
    """The training loop's options (the algorithm's own fields follow, without a prefix)."""

    env: str = "Pendulum-v1"
    """Environment id (Gymnasium id or dmc:<domain>-<task>)."""
    steps: int = 10_000
    """Environment steps to train for (with --action-repeat k the agent acts once every k of them)."""
    seed: int = 0
    """Seed of the agent (networks, sampling) and the environment (episode resets)."""
    preset: str | None = None
    """Named preset of the algorithm's config (applied before the field flags)."""
    config: Path | None = None
    """A YAML file with `train:` and `agent:` sections (a run's config.yaml works); flags override it."""
    out: Path | None = None
    """Run directory (default runs/<algo>/<env>/<seed>-<time>/)."""
    resume: Path | None = None
    """Continue the run in this directory from its last checkpoint (other options are ignored)."""
    eval_every: int = 1000
    """Evaluate every this many environment steps (at the next episode end)."""
    eval_episodes: int = 10
    """Episodes per evaluation."""
    checkpoint_every: int | None = None
    """Checkpoint every this many environment steps (at episode ends); default: eval_every."""
    action_repeat: int | None = None
    """Repeat each action this many times, summing the rewards; default: the algorithm's choice for the env
    (TD-MPC on DeepMind Control: the official per-domain value, cartpole 8, walker/humanoid/dog 2, others 4;
    otherwise 1). config.yaml records the value used."""
    device: str | None = None
    """auto (CUDA where available, else the CPU; the default), cpu, cuda or cuda:N; with --resume, moves the
    run there (a run resumes on any device)."""
    no_progress: Annotated[bool, tyro.conf.FlagCreatePairsOff] = False
    """Do not show the progress bar."""


def _train_args_type(config_cls, default_config):
    """LoopArgs plus an ``agent`` field holding the algorithm's config, flags without prefix."""
    return dataclasses.make_dataclass(
        "TrainArgs",
        [("agent", Annotated[config_cls, tyro.conf.OmitArgPrefixes],
          dataclasses.field(default_factory=lambda: dataclasses.replace(default_config)))],
        bases=(LoopArgs,),
    )


def _option_value(args: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in ``args`` (the last one wins), else None."""
    value = None
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(name + "="):
            value = a.split("=", 1)[1]
    return value


def _without_option(args: list[str], name: str) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


def load_config_file(path: str | Path) -> dict:
    """A config YAML with ``train:`` and/or ``agent:`` sections (the layout of a run's config.yaml); the
    ``train:`` fields checked (names, types, NaN) with errors naming the file. The ``agent:`` fields are
    checked once the algorithm is known (``train_command``)."""
    from modelrl.agents.base import check_fields
    from modelrl.runner.rundir import load_yaml_config
    from modelrl.runner.train import TrainConfig

    data = load_yaml_config(path)
    return {"train": check_fields(TrainConfig, data.get("train", {}), f"{path}, section train"),
            "agent": data.get("agent", {})}


def train_command(argv: list[str]) -> int:
    """``modelrl train ALGO ...``: parse with ALGO's config (preset applied to the defaults), then run.

    Precedence, lowest first: the algorithm's defaults, the preset, the ``--config`` file, the flags.
    """
    from rich.console import Console
    from rich.markup import escape

    from modelrl.agents import AGENTS, agent_classes

    console = Console()
    config_path = _option_value(argv, "--config")
    if not argv or (argv[0].startswith("-") and config_path is None):
        tyro.cli(TrainHelp, args=argv or ["--help"], prog="modelrl train",
                 description=f"Train an agent and write a run directory. Algorithms: {', '.join(AGENTS)}. "
                             f"`modelrl train ALGO --help` lists ALGO's fields and presets.")
        return 2
    file_cfg = load_config_file(config_path) if config_path is not None else {"train": {}, "agent": {}}
    file_algo = file_cfg["train"].get("algo")
    if argv[0].startswith("-"):
        if file_algo is None:
            raise ValueError(f"{config_path} names no algorithm (train: algo:); give one: modelrl train ALGO")
        algo, rest = file_algo, list(argv)
    else:
        algo, rest = argv[0], argv[1:]
        if file_algo is not None and file_algo != algo:
            raise ValueError(f"{config_path} trains {file_algo!r}, the command line asks for {algo!r}")
    rest = _without_option(rest, "--config")
    config_cls, _ = agent_classes(algo)
    preset = _option_value(rest, "--preset") or file_cfg["train"].get("preset")
    from modelrl.agents.base import RunStopped, build_config, check_fields

    if config_path is not None:
        check_fields(config_cls, file_cfg["agent"], f"{config_path}, section agent")
    env_id = _option_value(rest, "--env") or file_cfg["train"].get("env")
    default_config = build_config(config_cls, preset, env_id, **file_cfg["agent"])  # per-task values shown in --help
    presets = ", ".join(config_cls.PRESETS) or "none"
    args_type = _train_args_type(config_cls, default_config)
    loop_names = {f.name for f in dataclasses.fields(LoopArgs)}
    loop_defaults = {k: v for k, v in file_cfg["train"].items() if k in loop_names and k != "config"}
    if env_id is not None and loop_defaults.get("action_repeat") is None:  # --help shows the value a run would use
        loop_defaults["action_repeat"] = config_cls.default_action_repeat(env_id)
    defaults = args_type(**loop_defaults, agent=default_config)
    check_options(rest, [LoopArgs, config_cls], f"modelrl train {algo}")
    args = tyro.cli(args_type, args=rest, default=defaults, prog=f"modelrl train {algo}",
                    description=f"Train {algo} (algorithms: {', '.join(AGENTS)}; presets of {algo}: {presets}).")
    from modelrl.runner.rundir import read_run_config
    from modelrl.runner.train import TrainConfig, check_train_config, train

    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in file_cfg["train"].items() if k in train_fields}
    values.update({k: getattr(args, k) for k in loop_names & train_fields
                   if not (k == "device" and args.device is None)})
    values["algo"] = algo
    cfg = check_train_config(values)
    overrides = {f.name: getattr(args.agent, f.name) for f in dataclasses.fields(args.agent)}
    try:
        if args.resume is not None and (Path(args.resume) / "config.yaml").exists():
            saved = read_run_config(args.resume)
            saved_algo = saved["train"].get("algo")
            if saved_algo is not None and saved_algo != algo:
                raise ValueError(f"{args.resume} is a {saved_algo} run; resume it with "
                                 f"`modelrl train {saved_algo} --resume {args.resume}`")
        resume_steps = None
        if args.resume is not None:  # the run's config.yaml decides; --steps extends it, --device moves it
            resume_steps = args.steps if _option_value(rest, "--steps") is not None else None
            given = sorted({a.split("=", 1)[0] for a in rest if a.startswith("--")}
                           - {"--resume", "--steps", "--device", "--no-progress"})
            if given:
                console.print(f"[yellow]note:[/yellow] ignored with --resume (the run's config.yaml decides them): "
                              f"{escape(', '.join(given))}", soft_wrap=True)
        _, run_dir = train(cfg, overrides=overrides, out=args.out, resume=args.resume, progress=not args.no_progress,
                           device=args.device, steps=resume_steps)
    except RunStopped as err:  # stopped on purpose (a person stopped labelling): the run is resumable
        console.print(f"[yellow]stopped:[/yellow] {escape(str(err))}", soft_wrap=True)
        return RUNTIME_FAULT
    console.print(evaluation_table(run_dir, read_run_config(run_dir)["train"]["eval_episodes"]))
    console.print(f"run directory: {run_dir} (config.yaml, metrics.csv, tb/, checkpoints/, "
                  f"plots/learning_curve.png)", markup=False, soft_wrap=True)
    return 0


def evaluation_table(run_dir: Path, episodes: int):
    """The run's learning curve as a table: one row per evaluation of ``metrics.csv``."""
    from rich.table import Table

    from modelrl.runner.rundir import read_metrics

    _, rows, _ = read_metrics(Path(run_dir) / "metrics.csv")
    table = Table(title=f"evaluations ({episodes} episodes each)")
    for col in ("env step", "eval return", "std", "last train episode", "train CPU s"):
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(str(int(float(row["env_step"]))), f"{float(row['eval_return']):.1f}",
                      f"{float(row['eval_return_std']):.1f}", f"{float(row['train_return']):.1f}",
                      f"{float(row['train_cpu_s']):.1f}")
    return table


@dataclasses.dataclass
class EvalArgs:
    """Evaluate a trained agent on fresh episodes (eval.json); --video renders MP4 and GIF."""

    run: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """Run directory (from `modelrl train`)."""
    episodes: int = 10
    """Evaluation episodes, with the agent's evaluation (not exploratory) action."""
    seed: int = 0
    """Episode i resets with seed + i."""
    video: bool = False
    """Render episodes to RUN/videos/episode_<i>.mp4 and .gif (plus one frame as .png)."""
    video_episodes: int = 1
    """How many of the episodes (the first ones) to render."""
    max_steps: int | None = None
    """Cut episodes after this many steps (default: the env's time limit)."""
    fps: int | None = None
    """Video frame rate (default: the env's render_fps)."""
    device: str = "auto"
    """Where the agent runs: auto (CUDA where available), cpu, cuda or cuda:N; any device loads any run."""
    sequential: bool = False
    """Run the episodes one after another instead of in lockstep (one batched plan per step for all)."""


def eval_command(args: EvalArgs) -> int:
    from rich.console import Console
    from rich.table import Table

    from modelrl.runner.evaluate import evaluate_run

    console = Console()
    res = evaluate_run(args.run, episodes=args.episodes, seed=args.seed, video=args.video,
                       video_episodes=args.video_episodes, max_steps=args.max_steps, fps=args.fps,
                       device=args.device, lockstep=not args.sequential)
    table = Table(title=f"{res['algo']} on {res['env']} ({args.run})")
    for col in ("episode", "reset seed", "return", "steps"):
        table.add_column(col, justify="right")
    for i, (r, n) in enumerate(zip(res["returns"], res["lengths"])):
        table.add_row(str(i), str(res["reset_seeds"][i]), f"{r:.1f}", str(n))
    table.add_row("mean", "", f"{res['mean_return']:.1f} ± {res['std_return']:.1f}", "", style="bold")
    console.print(table)
    console.print(f"wrote {Path(args.run) / 'eval.json'}", soft_wrap=True)
    for v in res["videos"]:
        console.print(f"wrote {v}", soft_wrap=True)
    return 0


@dataclasses.dataclass
class PlotArgs:
    """Learning curves of runs as PNG: mean and spread over seeds, x in env steps and wall-clock."""

    runs: Annotated[tuple[Path, ...], tyro.conf.Positional, tyro.conf.arg(metavar="RUN...")]
    """Run directories, or folders holding runs (searched recursively). Seeds of one setting are averaged."""
    x: Literal["both", "steps", "wall"] = "both"
    """x axis: environment steps, wall-clock seconds, or both side by side."""
    band: Literal["minmax", "std", "none"] = "minmax"
    """Spread over seeds: min-max, one standard deviation, or none."""
    out: Path | None = None
    """PNG to write (default RUN/plots/learning_curve.png for one run, else learning_curves.png)."""
    title: str | None = None


def plot_command(args: PlotArgs) -> int:
    from rich.console import Console

    from modelrl.runner.plots import default_plot_path, plot_runs

    console = Console()
    if not args.runs:
        raise ValueError("give at least one run directory (or a folder of runs): modelrl plot RUN...")
    out = plot_runs(args.runs, args.out or default_plot_path(args.runs), x=args.x, band=args.band, title=args.title)
    console.print(f"wrote {out}", soft_wrap=True)
    return 0


@dataclasses.dataclass
class SweepArgs:
    """Grid or random search over config fields and seeds on Ray Tune, locally or on a cluster."""

    algo: Annotated[str | None, tyro.conf.Positional, tyro.conf.arg(metavar="ALGO")] = None
    """Algorithm to train in every trial (not with --resume, which reads the sweep's own)."""
    env: str = "Pendulum-v1"
    steps: int = 10_000
    """Environment steps per trial."""
    preset: str | None = None
    grid: tuple[str, ...] = ()
    """Fields to grid over, each FIELD=V1,V2,... (e.g. --grid horizon=10,20 planner=cem,mppi)."""
    random: tuple[str, ...] = ()
    """Fields to draw at random, each FIELD=LOW:HIGH or FIELD=LOW:HIGH:log (integers for integer bounds)."""
    samples: int = 1
    """Random draws (each runs on every grid point and seed)."""
    fixed: Annotated[tuple[str, ...], tyro.conf.arg(name="set")] = ()
    """Fields set for every trial, not varied: FIELD=VALUE ..."""
    seeds: str = "0,1,2"
    """Seeds of every setting: a list 0,1,2 or a range 0-4."""
    eval_every: int = 1000
    eval_episodes: int = 10
    out: Path | None = None
    """Sweep directory (default runs/sweeps/<algo>-<env>-<time>/)."""
    address: str | None = None
    """A running Ray cluster: auto or HEAD-IP:6379 on a cluster node, or ray://HEAD:10001. Default: local Ray."""
    cpus_per_trial: float = 1.0
    num_cpus: int | None = None
    """CPUs of the local Ray (default: all of this machine's)."""
    search_seed: int = 0
    """Seed of the random draws."""
    storage: str | None = None
    """Where every trial's run directory is kept (Ray Tune storage): a path every cluster node sees, or a URI
    (s3://bucket/path, gs://...). Default: the sweep directory."""
    resume: Path | None = None
    """Continue the sweep in this directory: finished trials are kept, unfinished ones resume from their last
    checkpoint. Every other option but --address is the sweep's own (sweep.yaml)."""
    retry_failed: bool = False
    """With --resume: rerun failed trials too, from their last checkpoint."""


def sweep_command(args: SweepArgs) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from modelrl.runner.sweep import SweepError, parse_grid, parse_random, parse_seeds, run_sweep

    console = Console()
    if args.resume is not None and args.algo is not None:
        raise SweepError("--resume continues a sweep with its own algorithm and settings (sweep.yaml): "
                         "give no ALGO with it")
    if args.retry_failed and args.resume is None:
        raise SweepError("--retry-failed goes with --resume SWEEP_DIR")
    fixed = {k: v[0] for k, v in parse_grid(args.fixed).items()}
    res = run_sweep(args.algo, args.env, args.steps, grid=parse_grid(args.grid), random=parse_random(args.random),
                    fixed=fixed, seeds=parse_seeds(args.seeds), samples=args.samples, preset=args.preset,
                    eval_every=args.eval_every, eval_episodes=args.eval_episodes, out=args.out,
                    address=args.address, cpus_per_trial=args.cpus_per_trial, num_cpus=args.num_cpus,
                    search_seed=args.search_seed, storage=args.storage, resume=args.resume,
                    retry_failed=args.retry_failed, on_start=lambda line: console.print(line, soft_wrap=True,
                                                                                        markup=False))
    spec = yaml.safe_load((res.sweep_dir / "sweep.yaml").read_text())
    table = Table(title=f"sweep: {spec['algo']} on {spec['env']}, {spec['steps']} steps (final evaluation, over seeds)")
    for col in [*res.varied, "seeds", "mean return", "std", "min", "max"]:
        table.add_column(col, justify="right")
    shown = set()
    for row in res.summary:
        seeds = f"{row['seeds']}/{row['seeds_expected']}" if row["seeds"] < row["seeds_expected"] else str(row["seeds"])
        table.add_row(*[_short(row[k]) for k in res.varied], seeds, f"{row['mean_return']:.1f}",
                      f"{row['std_return']:.1f}", f"{row['min_return']:.1f}", f"{row['max_return']:.1f}")
        shown.add(tuple(repr(row[k]) for k in res.varied))
    for trial in res.missing:  # a setting none of whose seeds finished still gets its line
        key = tuple(repr(trial[k]) for k in res.varied)
        if key not in shown:
            shown.add(key)
            table.add_row(*[_short(trial[k]) for k in res.varied], f"0/{len(spec['seeds'])}", "-", "-", "-", "-")
    console.print(table)
    if res.failed:
        console.print(f"[yellow]{len(res.failed)} trial(s) failed[/yellow] (summary.json lists them): "
                      f"{escape(res.failed[0])}", soft_wrap=True)
    plot = f", {res.plot}" if res.plot is not None else ""
    console.print(f"wrote {res.table} (one row per trial), {res.sweep_dir / 'summary.json'}{plot}", soft_wrap=True,
                  markup=False)
    if not res.complete:
        missing = ", ".join(f"{_setting(t, res.varied)} seed {t['seed']} ({t['status']})" for t in res.missing[:6])
        more = f" and {len(res.missing) - 6} more" if len(res.missing) > 6 else ""
        retry = " --retry-failed" if res.failed else ""
        console.print(f"[red]sweep incomplete:[/red] {len(res.missing)} of {len(res.rows)} trials have no result: "
                      f"{escape(missing)}{more}. Continue it with: modelrl sweep --resume {escape(str(res.sweep_dir))}"
                      f"{retry}", soft_wrap=True)
        return 1
    return 0


def _setting(trial: dict, varied: list[str]) -> str:
    return ",".join(f"{k}={_short(trial[k])}" for k in varied) or "default"


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@dataclasses.dataclass
class BenchHelp:
    """Run a benchmark from benchmarks/: `modelrl bench NAME [ARGS...]` (`modelrl bench list`)."""

    name: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="NAME")]
    """Module of benchmarks/ (e.g. planners), run as `python -m benchmarks.NAME ARGS...`; see NAME --help."""


def benchmarks_dir() -> Path | None:
    """The source checkout's ``benchmarks/`` folder (next to the modelrl package), if there is one."""
    import modelrl

    path = Path(modelrl.__file__).resolve().parent.parent / "benchmarks"
    return path if (path / "__init__.py").is_file() else None


def available_benchmarks() -> list[str]:
    folder = benchmarks_dir()
    if folder is None:
        return []
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_") and p.stem != "common")


def bench_command(argv: list[str]) -> int:
    """``modelrl bench NAME ARGS...``: ``python -m benchmarks.NAME ARGS...`` in the source checkout."""
    import subprocess

    from rich.console import Console

    console = Console()
    if not argv or argv[0] in ("-h", "--help"):
        tyro.cli(BenchHelp, args=["--help"], prog="modelrl bench")
        return 2
    names = available_benchmarks()
    folder = benchmarks_dir()
    if folder is None:
        raise ValueError("benchmarks/ lives in the source checkout, next to modelrl/; install modelrl from a clone "
                         "(pip install -e .) to run them")
    if argv[0] == "list":
        console.print("benchmarks: " + ", ".join(names))
        return 0
    name = argv[0]
    if name not in names:
        raise unknown_name("benchmark", name, names)
    return subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *argv[1:]], cwd=folder.parent)


@dataclasses.dataclass
class DiagnoseArgs:
    """Errors of a run's learned model on fresh random episodes; writes diagnostics.json and a plot."""

    run: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """Run directory (from `modelrl train`)."""
    episodes: int = 5
    """Fresh episodes of uniform random actions to test on."""
    k: int = 30
    """Longest open-loop prediction, in steps."""
    seed: int = 12345
    """Seed of the fresh episodes (their resets and random actions)."""


def diagnose(args: DiagnoseArgs) -> int:
    from rich.console import Console
    from rich.table import Table

    from modelrl.runner.diagnose import diagnose as run_diagnose

    console = Console()
    res = run_diagnose(args.run, episodes=args.episodes, k=args.k, seed=args.seed)
    table = Table(title=f"model diagnostics ({res['transitions']} held-out transitions)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("one-step MSE", f"{res['one_step_mse']:.3g}")
    table.add_row("one-step MSE / var(s' - s)", f"{res['one_step_normalized_mse']:.3g}")
    table.add_row("one-step RMSE per dim", ", ".join(f"{v:.3g}" for v in res["one_step_rmse_per_dim"]))
    for j in sorted({1, 5, 10, len(res["k_step_mse"])}):
        if j <= len(res["k_step_mse"]):
            table.add_row(f"{j}-step open-loop MSE", f"{res['k_step_mse'][j - 1]:.3g}")
    console.print(table)
    console.print(f"wrote {args.run / 'diagnostics.json'} and {args.run / 'plots' / 'diagnostics.png'}", soft_wrap=True)
    return 0


COMMANDS = {
    "train": TrainHelp, "eval": EvalArgs, "plan": PlanArgs, "plot": PlotArgs, "diagnose": DiagnoseArgs,
    "sweep": SweepArgs, "bench": BenchHelp,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``modelrl`` command: every command's failure is one ``error:`` line and an exit status
    (``report_error``), every warning one ``warning:`` line."""
    from rich.console import Console

    argv = list(sys.argv[1:] if argv is None else argv)
    console = Console()
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning(console)
        try:
            return _dispatch(argv)
        except Exception as err:  # noqa: BLE001 (the one place every command's error is reported)
            return report_error(console, err)


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] == "train":
        return train_command(argv[1:])
    if argv and argv[0] == "bench":
        return bench_command(argv[1:])
    if not argv or argv[0].startswith("-"):  # modelrl --help
        subcommands: dict[str, Callable[..., Any]] = dict(COMMANDS)
        tyro.extras.subcommand_cli_from_dict(
            subcommands, prog="modelrl", args=argv,
            description="modelrl: model-based RL, MPC and planning. `modelrl COMMAND --help` lists a command's "
                        "options.",
        )
        return BAD_INPUT
    if argv[0] not in COMMANDS:
        raise unknown_name("command", argv[0], COMMANDS)
    # each command parsed on its own: tyro's messages (a value of the wrong type) and --help speak of that command
    args_type, prog = COMMANDS[argv[0]], f"modelrl {argv[0]}"
    check_options(argv[1:], [args_type], prog)
    args: Any = tyro.cli(args_type, args=argv[1:], prog=prog)
    handlers: dict[type, Callable[[Any], int]] = {PlanArgs: plan, DiagnoseArgs: diagnose, EvalArgs: eval_command,
                                                  PlotArgs: plot_command, SweepArgs: sweep_command}
    return handlers[args_type](args)


def check_options(argv: list[str], classes: list[type], prog: str) -> None:
    """Refuse, in the one error form of every command (``error: Unknown ...``, the closest valid names, exit
    status 2), what tyro would otherwise refuse in a box of its own: an option that none of the dataclasses
    ``classes`` (the command's flags) has, a value outside a ``Literal`` field's choices, and a first argument
    outside the choices of a positional ``Literal`` (``modelrl plan PLANNER``). Values of the wrong type and
    missing values are left to tyro."""
    flags: dict[str, Any] = {}
    positional = []
    arg_config: type[Any] = type(tyro.conf.arg())  # tyro's (private) class of a tyro.conf.arg(...) mark
    for cls in classes:
        hints = typing.get_type_hints(cls, include_extras=True)
        for field in dataclasses.fields(cls):
            tp = hints[field.name]
            marks: list[Any] = []
            if typing.get_origin(tp) is Annotated:
                tp, *marks = typing.get_args(tp)
            if any(m is tyro.conf.Positional for m in marks):
                positional.append((field.name, tp))
                continue
            renamed = [m.name for m in marks if isinstance(m, arg_config) and m.name]
            flag = "--" + (renamed[0] if renamed else field.name).replace("_", "-")
            flags[flag] = tp
            if tp is bool and not any(m is tyro.conf.FlagCreatePairsOff for m in marks):
                flags["--no-" + flag[2:]] = bool
    if positional and argv and not argv[0].startswith("-"):
        name, tp = positional[0]
        allowed = _choices(tp)
        if allowed is not None and argv[0] not in allowed:
            raise unknown_name(name, argv[0], allowed)
    value: str | None
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if not arg.startswith("--") or arg == "--help":
            continue
        given, eq, value = arg.partition("=")
        flag = "--" + given[2:].replace("_", "-")
        if flag not in flags:
            raise unknown_name("option", given, flags, where=f" for {prog}", cutoff=0.75,
                               listing=f"`{prog} --help` lists them.")
        if not eq:
            value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
        choices = _choices(flags[flag])
        if choices is not None and value is not None and value not in choices:
            raise unknown_name("value", value, choices, where=f" for {given}")


def _choices(tp) -> list[str] | None:
    """The values, as written on the command line, that a ``Literal`` (or ``Literal | None``) allows; None for any
    other type."""
    members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    if not any(typing.get_origin(m) is Literal for m in members) or \
            not all(typing.get_origin(m) is Literal or m is type(None) for m in members):
        return None
    return [str(v) for m in members if m is not type(None) for v in typing.get_args(m)] + \
        (["None"] if type(None) in members else [])


if __name__ == "__main__":
    sys.exit(main())
