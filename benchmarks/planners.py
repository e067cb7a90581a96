"""Planner benchmark: our MPPI against pytorch-mppi on the pendulum swing-up, and all five planners.

    python -m benchmarks.planners [--episodes 10] [--quick]

Same machine, same run, one thread, float32: closed-loop Pendulum-v1 from the standard random
resets (episode i resets with seed i), 200 steps, true model. Writes
benchmarks/results/planners.json and the tables in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from benchmarks.common import machine, md_table, save_results, write_docs_section
from modelrl.envs import LinearDynamics, PendulumDynamics, make_env, true_dynamics
from modelrl.planners import LQR, make_planner
from modelrl.runner.plan import resolved_planner_kwargs

SAMPLES, HORIZON = 1000, 15  # the comparison's fixed budget (issue: same samples and horizon for both)
SIGMA, LAMBDA = 0.5, 0.1  # noise std (normalised action) and temperature given to both MPPIs


def episode(act, reset, env, seed: int) -> tuple[float, float, int]:
    """One closed-loop episode; returns (return, seconds spent choosing actions, steps)."""
    obs, _ = env.reset(seed=seed)
    reset()
    total, spent, steps, done = 0.0, 0.0, 0, False
    while not done:
        t0 = time.perf_counter()
        a = act(obs)
        spent += time.perf_counter() - t0
        obs, r, term, trunc, _ = env.step(a)
        total, steps, done = total + r, steps + 1, term or trunc
    return total, spent, steps


def pytorch_mppi_controller(compiled: bool):
    """pytorch-mppi's MPPI on the same pendulum: ``PendulumDynamics.transition`` (no reward) as
    ``dynamics``, Pendulum-v1's cost as ``running_cost`` (pytorch-mppi scores the state after each step, so the
    cost is of the next state: the same ranking up to the first state's cost, which is common to all samples)."""
    from pytorch_mppi import MPPI as PMPPI

    def running_cost(s, u):
        th = torch.atan2(s[:, 1], s[:, 0])
        return th**2 + 0.1 * s[:, 2] ** 2 + 0.001 * (2 * u[:, 0].clamp(-1, 1)) ** 2

    ctrl = PMPPI(PendulumDynamics().transition, running_cost, nx=3, noise_sigma=torch.tensor([[SIGMA**2]]),
                 num_samples=SAMPLES, horizon=HORIZON, lambda_=LAMBDA, u_min=torch.tensor([-1.0]),
                 u_max=torch.tensor([1.0]), device="cpu")
    if compiled:
        ctrl.compile(dynamic=False)

    def act(obs):
        with torch.no_grad():  # as ours plans (its default): no autograd graph on either side
            return ctrl.command(torch.as_tensor(obs)).numpy()

    return act, ctrl.reset


def versus_pytorch_mppi(episodes: int, modes: tuple[str, ...]) -> dict:
    """Both MPPIs, eager and (where asked) with torch.compile, episodes interleaved."""
    env = make_env("Pendulum-v1")
    torch.manual_seed(0)
    controllers = {}
    for mode in modes:
        ours = make_planner("mppi", PendulumDynamics(), env.action_space, horizon=HORIZON, num_samples=SAMPLES,
                            noise_sigma=SIGMA, temperature=LAMBDA, seed=0, compile=mode == "compiled")
        controllers[f"ours/{mode}"] = (ours.act, ours.reset)
        controllers[f"pytorch_mppi/{mode}"] = pytorch_mppi_controller(mode == "compiled")
    warm_obs = np.array([-1.0, 0.0, 0.0], dtype=np.float32)
    for act, reset in controllers.values():  # warm-up (and compilation) outside the timing
        act(warm_obs)
        reset()
    res: dict[str, dict[str, Any]] = {k: {"returns": [], "seconds": 0.0, "steps": 0} for k in controllers}
    for ep in range(episodes):  # interleaved, so all see the same machine load
        for name, (act, reset) in controllers.items():
            ret, sec, n = episode(act, reset, env, ep)
            res[name]["returns"].append(ret)
            res[name]["seconds"] += sec
            res[name]["steps"] += n
    for r in res.values():
        r["mean_return"] = float(np.mean(r["returns"]))
        r["std_return"] = float(np.std(r["returns"]))
        r["ms_per_action"] = 1000.0 * r.pop("seconds") / r.pop("steps")
    ratios = {m: res[f"ours/{m}"]["ms_per_action"] / res[f"pytorch_mppi/{m}"]["ms_per_action"] for m in modes}
    paired = {}  # ours - theirs, episode by episode (same reset seed): mean and standard error
    for name in res:
        if name.startswith("ours"):
            d = np.subtract(res[name]["returns"], res["pytorch_mppi/" + name.split("/")[1]]["returns"])
            paired[name] = {"mean": float(d.mean()),
                            "se": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0}
    return {"runs": res, "time_ratio": ratios, "paired_return_difference": paired}


def closed_loop(env_id: str, names: tuple[str, ...], episodes: int) -> dict:
    """Our planners on ``env_id`` with its true model and the settings `modelrl plan` uses."""
    env = make_env(env_id)
    out = {}
    for name in names:
        kwargs = resolved_planner_kwargs(name, env_id, {})
        planner = make_planner(name, true_dynamics(env_id), env.action_space, seed=0, **kwargs)
        rets, sec, steps = [], 0.0, 0
        for ep in range(episodes):
            r, s, n = episode(planner.act, planner.reset, env, ep)
            rets.append(r)
            sec, steps = sec + s, steps + n
        out[name] = {"mean_return": float(np.mean(rets)), "std_return": float(np.std(rets)), "returns": rets,
                     "ms_per_action": 1000.0 * sec / steps, "settings": kwargs}
        print(f"  {name:16s} mean {out[name]['mean_return']:8.1f}  {out[name]['ms_per_action']:7.2f} ms/action")
    return out


def linear_system(steps: int = 60) -> dict:
    """4-state double integrator: closed-loop cost of MPPI, CEM and iLQR against LQR, and LQR's time per action."""
    dt = 0.1
    A = np.kron(np.eye(2), np.array([[1.0, dt], [0.0, 1.0]]))
    B = np.kron(np.eye(2), np.array([[0.5 * dt * dt], [dt]]))
    Q, R = np.eye(4), 0.1 * np.eye(2)
    x0 = np.array([1.0, 0.0, -1.0, 0.5])
    dyn = LinearDynamics(A, B, Q, R)
    bounds = (-10 * np.ones(2), 10 * np.ones(2))
    planners = {
        "lqr": LQR(A, B, Q, R),
        "mppi": make_planner("mppi", dyn, bounds, horizon=30, noise_sigma=0.5, temperature=0.3, iterations=2, seed=0),
        "cem": make_planner("cem", dyn, bounds, horizon=30, init_std=1.0, iterations=8, num_samples=1000,
                            num_elites=100, seed=0),
        "ilqr": make_planner("ilqr", dyn, bounds, horizon=30, seed=0),
    }
    out = {}
    for name, p in planners.items():
        x, cost, spent = x0.copy(), 0.0, 0.0
        p.reset()
        for _ in range(steps):
            t0 = time.perf_counter()
            u = np.asarray(p.act(x.astype(np.float32)), dtype=np.float64)
            spent += time.perf_counter() - t0
            cost += x @ Q @ x + u @ R @ u
            x = A @ x + B @ u
        out[name] = {"cost": float(cost), "ms_per_action": 1000.0 * spent / steps}
    for v in out.values():
        v["cost_ratio_to_lqr"] = v["cost"] / out["lqr"]["cost"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--versus-episodes", type=int, default=100,
                        help="episodes of the pytorch-mppi comparison: at horizon 15 about 1 swing-up in 50 sticks "
                             "below the top on either side, which moves a 10-episode mean by ~100")
    parser.add_argument("--quick", action="store_true", help="2 episodes, no results written")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile comparison")
    args = parser.parse_args()
    episodes = 2 if args.quick else args.episodes
    torch.set_num_threads(1)
    print("MPPI vs pytorch-mppi (Pendulum-v1, 1000 samples, horizon 15):")
    modes = ("eager",) if args.no_compile else ("eager", "compiled")
    vs = versus_pytorch_mppi(2 if args.quick else args.versus_episodes, modes)
    for k, v in vs["runs"].items():
        print(f"  {k:22s} mean {v['mean_return']:8.1f}  {v['ms_per_action']:7.2f} ms/action")
    for m, r in vs["time_ratio"].items():
        print(f"  time ratio ours/pytorch_mppi ({m}): {r:.2f}")
    for k, d in vs["paired_return_difference"].items():
        print(f"  return {k} - pytorch_mppi: {d['mean']:+.2f} ± {d['se']:.2f} (s.e., paired by episode)")
    print("Our planners on Pendulum-v1:")
    five = closed_loop("Pendulum-v1", ("random_shooting", "cem", "icem", "mppi", "ilqr"), episodes)
    print("Cart-pole swing-up:")
    cart = closed_loop("CartPoleSwingUp-v0", ("mppi", "ilqr"), min(episodes, 3))
    print("4-state linear system (closed loop, 60 steps):")
    lin = linear_system()
    for k, v in lin.items():
        print(f"  {k:6s} cost {v['cost']:8.3f} (x{v['cost_ratio_to_lqr']:.3f} LQR)  "
              f"{v['ms_per_action']:7.3f} ms/action")
    if args.quick:
        return
    nv = args.versus_episodes
    data = {"machine": machine(), "episodes": episodes, "versus_episodes": nv, "versus_pytorch_mppi": vs,
            "pendulum": five, "cartpole": cart,
            "linear": lin}
    save_results("planners", data)
    m = data["machine"]
    rows = [[k, f"{v['mean_return']:.1f} ± {v['std_return']:.1f}", f"{v['ms_per_action']:.2f}"]
            for k, v in vs["runs"].items()]
    ratio_text = ", ".join(f"{m}: **{r:.2f}**" for m, r in vs["time_ratio"].items())
    text = (f"### Planners: MPPI against pytorch-mppi\n\n`python -m benchmarks.planners` on {m['cpu']}, "
            f"{m['date']}, torch {m['torch']}, 1 thread. Pendulum-v1 with the true model, {nv} episodes "
            f"(reset seeds 0..{nv - 1}), 1000 samples, horizon 15, noise std {SIGMA}, lambda {LAMBDA}, "
            "interleaved episode by episode.\n\n"
            + md_table(["MPPI", "mean return", "ms / action"], rows)
            + f"\n\nTime per action, ours / pytorch-mppi: {ratio_text}. `compiled` is torch.compile on both "
            "sides (ours: `compile=True`, the whole rollout; theirs: `MPPI.compile()`, dynamics and cost); "
            "compilation happens in a warm-up call outside the timing. Both plan under `torch.no_grad()`. "
            "pytorch-mppi gets the pendulum's transition as `dynamics` and Pendulum-v1's cost as `running_cost` "
            "(its API); ours gets `PendulumDynamics`, whose `step` returns the reward with the next state. "
            "Return difference, ours - pytorch-mppi, paired by reset seed (mean ± standard error): "
            + ", ".join(f"{k}: {d['mean']:+.1f} ± {d['se']:.1f}" for k, d in vs["paired_return_difference"].items())
            + ".\n\n"
            "### Planners: all five\n\nPendulum-v1 (settings as `modelrl plan` uses them):\n\n"
            + md_table(["planner", "mean return", "ms / action"],
                       [[k, f"{v['mean_return']:.1f} ± {v['std_return']:.1f}", f"{v['ms_per_action']:.2f}"]
                        for k, v in five.items()])
            + f"\n\nCart-pole swing-up (`CartPoleSwingUp-v0`, reward in [0, 1] per step, 200 steps, "
            f"{min(episodes, 3)} episodes):\n\n"
            + md_table(["planner", "mean return", "ms / action"],
                       [[k, f"{v['mean_return']:.1f} ± {v['std_return']:.1f}", f"{v['ms_per_action']:.2f}"]
                        for k, v in cart.items()])
            + "\n\n4-state linear system (two double integrators, 60 closed-loop steps from x0 = (1, 0, -1, 0.5)):\n\n"
            + md_table(["planner", "closed-loop cost", "x LQR", "ms / action"],
                       [[k, f"{v['cost']:.3f}", f"{v['cost_ratio_to_lqr']:.3f}", f"{v['ms_per_action']:.3f}"]
                        for k, v in lin.items()]))
    write_docs_section("planners", text)
    print("wrote benchmarks/results/planners.json and docs/benchmarks.md")


if __name__ == "__main__":
    main()
