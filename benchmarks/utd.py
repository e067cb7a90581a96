"""The update-to-data study: SAC and MBPO at G in {1, 5, 20} (40 where time allows).

    python -m benchmarks.utd [--envs Pendulum-v1 InvertedPendulum-v5] [--algos sac mbpo] [--utds 1 5 20]
                             [--seeds 0 1 2] [--steps N] [--eval-every N] [--episodes 10] [--resume]
    python -m benchmarks.utd --report      # tables and plot from benchmarks/results/utd.json only
    python -m benchmarks.utd --from-run RUN_DIR [--variant TEXT]   # record a `modelrl train` run directory

Every run trains through ``modelrl.runner.train`` with the agent's defaults for the task (MBPO:
the official per-task settings, ``modelrl.agents.mbpo.TASK_DEFAULTS``) except G. Recorded per
evaluation: return, training wall-clock (evaluation left out) and, for MBPO, its split between
model training, model rollouts and policy updates. Each finished run is appended to
benchmarks/results/utd.json at once; ``--resume`` skips runs already there. The report gives
returns at fixed env-step budgets, wall-clock per 1,000 env steps, the env steps each run needs
to reach SAC (G = 1)'s return at 10,000 steps, and a plot (docs/figures/utd_<env>.png).

A run's ``variant`` (None: the defaults) names settings other than the defaults, e.g. runs kept
from before a default changed; variants are reported as rows of their own and never enter the
acceptance check.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
import yaml

from benchmarks import sac_sb3
from benchmarks.common import (
    ROOT,
    add_run,
    align_runs,
    at,
    common_args,
    curve_from_run,
    fmt,
    load_results,
    machine,
    md_table,
    per_1k,
    run_ours,
    write_docs_section,
)

# Steps per run where --steps is not given: SAC long enough to have its 10k-step return, MBPO a third.
DEFAULT_STEPS = {("sac", "Pendulum-v1"): 10_000, ("mbpo", "Pendulum-v1"): 4000,
                 ("sac", "InvertedPendulum-v5"): 10_000, ("mbpo", "InvertedPendulum-v5"): 4000}
DEFAULT_EVAL_EVERY = {"Pendulum-v1": 500, "InvertedPendulum-v5": 250}
KEY = ("env", "algo", "utd", "seed", "variant")


def groups(runs: list[dict], algo: str) -> list[tuple[int, str | None, list[dict]]]:
    """(G, variant, runs) for ``algo``: the defaults (variant None) first at each G."""
    keys = sorted({(r["utd"], r.get("variant") or "") for r in runs if r["algo"] == algo})
    return [(utd, v or None,
             [r for r in runs if r["algo"] == algo and r["utd"] == utd and (r.get("variant") or "") == v])
            for utd, v in keys]


def name(algo: str, utd: int, variant: str | None) -> str:
    return f"{algo.upper()} G={utd}" + (f" ({variant})" if variant else "")


def record(run_dir: Path, variant: str | None) -> dict:
    """A ``modelrl train`` run directory as a study run (G as the agent resolved it for the task).

    A run recorded without ``variant`` must have used the defaults (any G): otherwise it would enter
    the acceptance check under the defaults' name, so the differing fields are named in the error."""
    from modelrl.agents import agent_classes, build_config
    from modelrl.envs import make_env

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    t = saved["train"]
    config_cls, agent_cls = agent_classes(t["algo"])

    def resolved(fields: dict) -> dict:
        env = make_env(t["env"], seed=t["seed"])
        config = agent_cls(env, build_config(config_cls, t.get("preset"), **fields), seed=t["seed"]).config
        env.close()
        return dataclasses.asdict(config)

    used = resolved(saved["agent"])
    utd = used["utd"]
    if not variant:
        defaults = resolved({"utd": utd})
        differ = sorted(k for k in used if used[k] != defaults[k] and k not in ("device",))
        if differ:
            raise ValueError(f"{run_dir} differs from the defaults in {', '.join(differ)}: "
                             "record it with --variant TEXT naming what it changes")
    curve = curve_from_run(run_dir)
    run = {"env": t["env"], "algo": t["algo"], "utd": int(utd), "seed": t["seed"], "steps": curve["step"][-1],
           "episodes": t["eval_episodes"], "curve": curve, "source": f"modelrl train, {run_dir.name}"}
    if variant:
        run["variant"] = variant
    return add_run("utd", run, KEY, {"machine": machine()})


def steps_to_reach(curve: dict, target: float) -> int | None:
    """The first evaluated env step whose return is at least ``target``."""
    for s, r in zip(curve["step"], curve["return"]):
        if r >= target:
            return s
    return None


def mean_curve(group: list[dict]) -> dict:
    """The seed-mean return on the aligned evaluation steps (``align_runs``; a point is never placed early)."""
    steps, idx = align_runs(group)
    return {"step": steps, "return": [float(np.mean([r["curve"]["return"][ix[j]] for r, ix in zip(group, idx)]))
                                      for j in range(len(steps))]}


def clock(group: list[dict]) -> str:
    """Process CPU time where every run recorded it (other jobs do not inflate it), else wall-clock."""
    return "train_cpu_s" if all("train_cpu_s" in r["curve"] for r in group) else "train_s"


def split(group: list[dict]) -> str:
    """Seconds per 1,000 env steps in model fits / model rollouts / policy updates (CPU where recorded)."""
    c = "cpu_" if all("time_cpu_policy_s" in r["curve"] for r in group) else ""
    parts = []
    for part in ("model", "rollout", "policy"):
        vals = [per_1k([r], f"time_{c}{part}_s") for r in group]
        parts.append("-" if any(v is None for v in vals)
                     else f"{np.mean(vals):.1f}")  # type: ignore[arg-type]  # no None: checked first
    return " / ".join(parts)


def sample_efficiency(runs: list[dict]) -> tuple[str, float | None]:
    """The acceptance check: env steps the seed-mean MBPO curve needs to reach SAC (G = 1)'s seed-mean
    return at 10,000 steps, against the steps SAC's seed-mean curve needs for it."""
    sac = [r for r in runs if r["algo"] == "sac" and r["utd"] == 1 and not r.get("variant")
           and at(r["curve"], 10_000) is not None]
    if not sac:
        return "SAC (G = 1) at 10,000 steps: not measured.", None
    target = float(np.mean([at(r["curve"], 10_000) for r in sac]))
    n_sac = steps_to_reach(mean_curve(sac), target)
    lines = [f"SAC (G = 1), {len(sac)} seeds: {target:.0f} at 10,000 steps; its seed-mean curve first reaches it at "
             f"{n_sac} steps, a third of which is {n_sac / 3:.0f}."]  # type: ignore[operator]  # see below
    contenders = [("sac", *g) for g in groups(runs, "sac") if g[0] > 1] + [("mbpo", *g) for g in groups(runs, "mbpo")]
    for algo, utd, variant, mb in contenders:
        if variant:
            continue
        n = steps_to_reach(mean_curve(mb), target)
        per_seed = ", ".join(f"seed {r['seed']}: {steps_to_reach(r['curve'], target) or 'not reached'}" for r in mb)
        last = min(r["curve"]["step"][-1] for r in mb)
        verdict = (f"does not reach it within {last} steps" if n is None
                   # n_sac: None only where SAC's seed-mean curve never reaches its own mean at 10k steps
                   else f"reaches it at {n} steps, {n / n_sac:.2f} of SAC's")  # type: ignore[operator]
        lines.append(f"{algo.upper()} G = {utd}, {len(mb)} seeds: the seed-mean curve {verdict} ({per_seed}).")
    return " ".join(lines), target


def report(data: dict) -> str:
    m = data["machine"]
    parts = [f"### UTD study: SAC and MBPO at several G\n\n`python -m benchmarks.utd` on {m['cpu']}, {m['date']}, "
             f"torch {m['torch']}, 1 thread per run; several runs shared the 2 cores, so times are process CPU "
             "seconds (what a free core's wall-clock would be) where recorded. Returns: mean ± std over seeds of "
             "each run's deterministic evaluation episodes (fixed reset seeds, the same for SAC and MBPO at a seed). "
             "\"steps to target\": per seed, env steps until the return first reaches the target below. Time "
             "split: seconds per 1,000 env steps in model fits / model rollouts / policy updates."]
    for env_id in sorted({r["env"] for r in data["runs"]}):
        runs = [r for r in data["runs"] if r["env"] == env_id]
        summary, target = sample_efficiency(runs)
        budgets = [1000, 2000, 3000, 5000, 10_000]
        rows = []
        for algo in ("sac", "mbpo"):
            for utd, variant, group in groups(runs, algo):
                reach = [steps_to_reach(r["curve"], target) if target is not None else None for r in group]
                eps = sorted({r.get("episodes", 10) for r in group})
                rows.append([algo, f"{utd} ({variant})" if variant else utd, len(group), "/".join(map(str, eps))]
                            + [fmt([at(r["curve"], b) for r in group]) for b in budgets]
                            + [", ".join("-" if x is None else f"{x}" for x in reach),
                               f"{per_1k(group, clock(group)):.0f}", split(group)])
        header = (["algo", "G", "seeds", "eval episodes"] + [f"@{b // 1000}k" for b in budgets]
                  + ["steps to target", "s / 1k steps", "model / rollout / policy s per 1k"])
        cost = ""
        sac1 = [r for r in runs if r["algo"] == "sac" and r["utd"] == 1 and not r.get("variant")]
        for utd, variant, mb in groups(runs, "mbpo"):
            if sac1 and not variant and clock(mb) == clock(sac1):
                ratio = per_1k(mb, clock(mb)) / per_1k(sac1, clock(sac1))  # type: ignore[operator]  # clock(): recorded
                cost += f" MBPO at G = {utd} costs {ratio:.1f}x SAC (G = 1) per env step."
        parts.append(f"#### {env_id}\n\n{summary}{cost}\n\n" + md_table(header, rows)
                     + f"\n\n![UTD study on {env_id}](figures/utd_{env_id}.png)")
    return "\n\n".join(parts)


def short(variant: str) -> str:
    """A legend-sized name of a variant: its text up to the first bracket (the results file keeps it whole)."""
    head = variant.split(" (")[0].strip().rstrip(";,")
    return head if len(head) <= 48 else head[:45] + "..."


def zoom_end(groups_: list[list[dict]]) -> int:
    """The env step where the action ends: twice the latest step at which a setting's mean return first gets 90%
    of the way from its first evaluation to its best (every curve flat after that), within the runs' length."""
    import numpy as np

    ends, longest = [], 0
    for group in groups_:
        steps, idx = align_runs(group)
        mean = np.array([[r["curve"]["return"][i] for i in ix] for r, ix in zip(group, idx)]).mean(0)
        goal = mean[0] + 0.9 * (mean.max() - mean[0])
        ends.append(next(s for s, m in zip(steps, mean) if m >= goal))
        longest = max(longest, steps[-1])
    return int(min(longest, max(2 * max(ends), 2000)))


def draw(ax, group: list[dict], label: str, style: str, x: str = "step") -> None:
    """The mean return of ``group`` against env steps (``x="step"``) or training seconds, with a min-max band."""
    import numpy as np

    steps, idx = align_runs(group)
    ret = np.array([[r["curve"]["return"][i] for i in ix] for r, ix in zip(group, idx)])
    xs = steps if x == "step" else np.array([[r["curve"][x][i] for i in ix] for r, ix in zip(group, idx)]).mean(0)
    line, = ax.plot(xs, ret.mean(0), style, label=f"{label} ({len(group)} seed{'s' if len(group) > 1 else ''})")
    if len(group) > 1:
        ax.fill_between(xs, ret.min(0), ret.max(0), color=line.get_color(), alpha=0.15)


def plot(data: dict) -> None:
    """Per env: the defaults at each G against env steps (zoomed on where learning happens), the variants beside
    the default of their G, and the defaults against training time; legends under the panels, off the curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"sac": "--", "mbpo": "-"}
    for env_id in sorted({r["env"] for r in data["runs"]}):
        runs = [r for r in data["runs"] if r["env"] == env_id]
        defaults = [(a, utd, g) for a in ("sac", "mbpo") for utd, v, g in groups(runs, a) if v is None]
        variants = [(a, utd, v, g) for a in ("sac", "mbpo") for utd, v, g in groups(runs, a) if v is not None]
        panels = 3 if variants else 2
        fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 5.4), sharey=True)
        end = zoom_end([g for _, _, g in defaults] + [g for *_, g in variants])
        colors = {}
        for algo, utd, group in defaults:
            draw(axes[0], group, name(algo, utd, None), styles[algo])
            colors[(algo, utd)] = axes[0].lines[-1].get_color()
            draw(axes[-1], group, name(algo, utd, None), styles[algo], x=clock(group))
            axes[-1].lines[-1].set_color(colors[(algo, utd)])
        if variants:
            shown = set()
            for algo, utd, variant, group in variants:
                if (algo, utd) in colors and (algo, utd) not in shown:  # the default of this G, for comparison
                    draw(axes[1], next(g for a, u, g in defaults if (a, u) == (algo, utd)), name(algo, utd, None),
                         styles[algo])
                    axes[1].lines[-1].set_color(colors[(algo, utd)])
                    shown.add((algo, utd))
                draw(axes[1], group, name(algo, utd, short(variant)), ":")
        for ax in axes[:-1]:
            ax.set_xlim(0, end)
            ax.set_xlabel(f"environment steps (the first {end:,})")
        axes[-1].set_xscale("log")
        axes[-1].set_xlabel("training time (s, 1 thread; CPU time where recorded)")
        axes[0].set_title("defaults at each G")
        if variants:
            axes[1].set_title("earlier settings (dotted) beside the defaults")
        axes[-1].set_title("defaults against training time")
        axes[0].set_ylabel("evaluation return")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, frameon=False)
        fig.suptitle(f"{env_id}: SAC and MBPO at several update-to-data ratios G")
        fig.tight_layout()
        (ROOT / "docs" / "figures").mkdir(parents=True, exist_ok=True)
        fig.savefig(ROOT / "docs" / "figures" / f"utd_{env_id}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common_args(p)
    p.add_argument("--envs", nargs="+", default=["Pendulum-v1", "InvertedPendulum-v5"])
    p.add_argument("--algos", nargs="+", default=["sac", "mbpo"])
    p.add_argument("--utds", type=int, nargs="+", default=[1, 5, 20])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--from-run", type=Path, nargs="+", default=[], metavar="RUN_DIR",
                   help="record these `modelrl train` run directories instead of training")
    p.add_argument("--variant", default=None, help="with --from-run: what the runs change from the defaults")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = load_results("utd") if (args.resume or args.report) else {}
    data.setdefault("runs", [])
    for run_dir in args.from_run:
        data = record(run_dir, args.variant)
    for seed in [] if (args.report or args.from_run) else args.seeds:
        for env_id in args.envs:
            for algo in args.algos:
                for utd in args.utds:
                    if any(tuple(r.get(k) for k in KEY) == (env_id, algo, utd, seed, None) for r in data["runs"]):
                        continue
                    steps = args.steps or DEFAULT_STEPS.get((algo, env_id), 10_000)
                    every = args.eval_every or DEFAULT_EVAL_EVERY.get(env_id, 1000)
                    shared = [r for r in load_results("sac_sb3").get("runs", []) if r["lib"] == "modelrl"
                              and r["seed"] == seed and r["curve"]["step"][-1] >= steps]
                    if (algo, utd, env_id) == ("sac", 1, sac_sb3.ENV) and shared:  # the same run: reuse it
                        run = {"env": env_id, "algo": algo, "utd": utd, "seed": seed,
                               "steps": shared[0]["curve"]["step"][-1],
                               "episodes": load_results("sac_sb3")["episodes"], "curve": shared[0]["curve"],
                               "source": f"benchmarks.sac_sb3 (the same run: modelrl SAC, G = 1, seed {seed})"}
                        data = add_run("utd", run, KEY, {"machine": machine()})
                        continue
                    curve = run_ours(algo, env_id, seed, steps, every, args.episodes, overrides={"utd": utd})
                    run = {"env": env_id, "algo": algo, "utd": utd, "seed": seed, "steps": steps,
                           "episodes": args.episodes, "curve": curve}
                    data = add_run("utd", run, KEY, {"machine": machine()})
                    print(f"{algo} G={utd} {env_id} seed {seed}: "
                          + ", ".join(f"{s}: {r:.0f}" for s, r in zip(curve["step"], curve["return"]))
                          + f" | {curve['train_s'][-1]:.0f} s training", flush=True)
    plot(data)
    write_docs_section("utd", report(data))


if __name__ == "__main__":
    main()
