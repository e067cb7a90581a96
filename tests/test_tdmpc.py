"""TD-MPC: TOLD parts, sub-trajectory sampling, losses and updates, latent planning, learning, resume, CLI."""

import numpy as np
import pytest
import torch

from modelrl.agents import make
from modelrl.agents.tdmpc import TDMPCConfig, default_action_repeat, linear_schedule
from modelrl.cli import main
from modelrl.data.buffer import ReplayBuffer
from modelrl.data.subtraj import MaxTree, SubTrajectorySampler, SumTree
from modelrl.envs import make_env
from modelrl.models.told import TOLD, HeadsMLP
from modelrl.runner.train import TrainConfig, train

from conftest import metrics_rows as rows
from conftest import random_buffer

# A deliberately tiny TD-MPC: mechanics under test, not learning.
TINY = {"mlp_dim": 32, "enc_dim": 16, "latent_dim": 8, "num_samples": 16, "num_elites": 4, "iterations": 2,
        "batch_size": 16, "horizon": 3, "explore_steps": 50, "mixture_coef": 0.25}


# -- TOLD -----------------------------------------------------------------------------------------
def test_told_shapes_init_and_fused_heads_match_separate_networks():
    torch.manual_seed(0)
    m = TOLD(5, 2, latent_dim=8, enc_dim=16, mlp_dim=32, seed=0)
    obs, a = torch.randn(7, 5), torch.rand(7, 2) * 2 - 1
    z = m.h(obs)
    z2, r = m.next(z, a)
    assert z.shape == z2.shape == (7, 8) and r.shape == (7,)
    assert m.Q(z, a).shape == (2, 7) and m.q_min(z, a).shape == (7,)
    pi = m.pi(z)
    assert pi.shape == (7, 2) and pi.abs().max() < 1
    noisy = m.pi(z, std=1.0, generator=torch.Generator().manual_seed(0))
    assert (noisy - pi).abs().max() <= 0.3 + 1e-6 and noisy.abs().max() < 1  # clipped noise, inside (-1, 1)
    # zero-initialised reward and Q outputs (official TOLD.__init__); orthogonal hidden weights
    assert torch.all(r == 0) and torch.all(m.Q(z, a) == 0)
    w = m.dyn_rew.w2[0]
    assert torch.allclose(w.T @ w, torch.eye(32), atol=1e-5)
    # the fused K-headed MLP computes what K separate MLPs would
    heads = HeadsMLP(6, 16, [3, 1], first="ln_tanh")
    heads.reset_parameters(torch.Generator().manual_seed(1))
    with torch.no_grad():
        for p in heads.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(4, 6)
    out = heads(x)
    for i, o in enumerate([3, 1]):
        h = x @ heads.w1[i] + heads.b1[i]
        h = torch.tanh(torch.nn.functional.layer_norm(h, (16,)) * heads.ln1_w[i] + heads.ln1_b[i])
        h = torch.nn.functional.elu(h @ heads.w2[i] + heads.b2[i])
        assert torch.allclose(out[i], h @ heads.w3[i, :, :o] + heads.b3[i, :, :o], atol=1e-5)
    # TD-MPC2 options: SimNorm latent, LayerNorm + Mish, a Q ensemble
    m2 = TOLD(5, 2, latent_dim=16, enc_dim=16, mlp_dim=32, num_q=5, simnorm_latent=True, layernorm_mish=True, seed=0)
    z = m2.h(obs)
    assert torch.allclose(z.view(7, 2, 8).sum(-1), torch.ones(7, 2), atol=1e-5)
    assert m2.Q(z, a).shape == (5, 7) and m2.q_min(z, a, torch.Generator().manual_seed(0)).shape == (7,)
    with pytest.raises(ValueError, match="num_q"):
        TOLD(5, 2, num_q=1)


# -- sub-trajectories -------------------------------------------------------------------------------
def brute_force_valid(buf, horizon):
    order = np.arange(buf.size) if buf.size < buf.capacity else (np.arange(buf.capacity) + buf.pos) % buf.capacity
    valid = np.zeros(buf.capacity, dtype=bool)
    for j in range(buf.size - horizon + 1):
        window = order[j:j + horizon]
        valid[window[0]] = not buf.episode_start[window[1:]].any()
    return valid


@pytest.mark.parametrize("horizon", [1, 3])
def test_sub_trajectories_stay_inside_one_episode_through_wraparound(horizon):
    buf = ReplayBuffer(1, 1, 23, seed=0)
    sampler = SubTrajectorySampler(23, horizon, seed=0)
    lengths = [7, 2, 9, 5, 4, 11, 3, 8]
    for ep, n in enumerate(lengths):
        for k in range(n):
            buf.add([100 * ep + k], [0.0], float(k), [100 * ep + k + 1], False, k == n - 1)
            sampler.sync(buf)
            assert np.array_equal(sampler.valid, brute_force_valid(buf, horizon)), (ep, k)
    batch = sampler.sample(buf, 256)
    first = batch["obs"][:, 0]
    assert batch["action"].shape == (horizon, 256, 1) and batch["next_obs"].shape == (horizon, 256, 1)
    for t in range(horizon):  # consecutive steps of the same episode
        assert np.array_equal(batch["next_obs"][t, :, 0], first + t + 1)
    rebuilt = SubTrajectorySampler(23, horizon)
    rebuilt.sync(buf)  # first sync rebuilds from the stored episode flags
    assert np.array_equal(rebuilt.valid, sampler.valid)


def test_prioritised_sampling_follows_priorities_with_importance_weights():
    env = make_env("Pendulum-v1", seed=0)
    buf = random_buffer(env, 600)
    sampler = SubTrajectorySampler(buf.capacity, 5, prioritized=True, alpha=1.0, beta=0.4, seed=0)
    sampler.sync(buf)
    valid = np.flatnonzero(sampler.valid)
    assert valid.size == 600 - 3 * 4  # 3 episodes of 200: the last 4 starts of each cross its end
    hot = valid[:10]
    sampler.update_priorities(valid, np.full(valid.size, 0.01))
    sampler.update_priorities(hot, np.full(10, 10.0))
    batch = sampler.sample(buf, 2000)
    share = np.isin(batch["idx"], hot).mean()
    expected = 10 * 10 / (10 * 10 + (valid.size - 10) * 0.01)
    assert abs(share - expected) < 0.05
    assert batch["weight"].max() == pytest.approx(1.0)
    assert batch["weight"][np.isin(batch["idx"], hot)].max() < batch["weight"].min() + 1e-3 or share == 1.0
    uniform = SubTrajectorySampler(buf.capacity, 5, prioritized=False, seed=0)
    ub = uniform.sample(buf, 64)
    assert np.all(ub["weight"] == 1.0) and np.all(uniform.valid[ub["idx"]])
    tree = SumTree(5)
    tree.set(np.arange(5), np.array([1.0, 0.0, 2.0, 0.0, 1.0]))
    assert tree.total == 4.0 and list(tree.find(np.array([0.5, 1.5, 2.9, 3.5]))) == [0, 2, 2, 4]


def test_new_windows_enter_at_the_current_maximum_priority_not_the_largest_ever():
    """Official ReplayBuffer.add: a new episode's priorities are the buffer's current maximum, so one early
    large TD error stops inflating later windows once it is updated down (before: the largest ever seen)."""
    buf = ReplayBuffer(1, 1, 40, seed=0)
    sampler = SubTrajectorySampler(40, 3, seed=0)
    for k in range(10):
        buf.add([k], [0.0], 0.0, [k + 1], False, k == 9)
    sampler.sync(buf)
    valid = np.flatnonzero(sampler.valid)
    assert np.all(sampler.priority[valid] == 1.0)  # nothing stored before: priority 1
    sampler.update_priorities(valid[:1], np.array([50.0]))  # one large TD error ...
    sampler.update_priorities(valid[1:], np.full(valid.size - 1, 0.5))
    assert sampler.max_priority == pytest.approx(50.0)
    sampler.update_priorities(valid[:1], np.array([2.0]))  # ... updated down
    buf.add([20], [0.0], 0.0, [21], False, False)
    for k in range(1, 5):
        buf.add([20 + k], [0.0], 0.0, [21 + k], False, False)
    sampler.sync(buf)
    new = np.flatnonzero(sampler.valid)[-3:]
    assert np.allclose(sampler.priority[new], 2.0 + 1e-6)  # the current maximum, not 50
    tree = MaxTree(5)
    tree.set(np.arange(5), np.array([1.0, 7.0, 2.0, 0.0, 3.0]))
    tree.set(np.array([1]), np.array([0.5]))
    assert tree.total == 3.0


# -- losses, updates, planning ---------------------------------------------------------------------
def test_update_trains_every_told_part_and_moves_the_target_by_tau():
    env = make_env("Pendulum-v1", seed=0)
    agent = make("tdmpc", env, seed=0, **{**TINY, "pretrain_updates": 1, "update_freq": 1})
    buf = random_buffer(env, 200)
    before = {k: v.clone() for k, v in agent.model.state_dict().items()}
    target_before = {k: v.clone() for k, v in agent.target.state_dict().items()}
    assert agent.update(buf, 10) == {}  # seed steps: nothing yet
    out = agent.update(buf, 50)
    assert {"consistency_loss", "reward_loss", "value_loss", "pi_loss", "grad_norm", "weighted_loss"} <= set(out)
    assert all(np.isfinite(float(v)) for v in out.values())
    after = agent.model.state_dict()
    for part in ("encoder", "dyn_rew", "policy", "q"):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(part)), part
    k = "dyn_rew.layers.1.weight"
    expected = (1 - 0.01) * target_before[k] + 0.01 * after[k]  # theta- <- (1 - tau) theta- + tau theta
    assert torch.allclose(agent.target.state_dict()[k], expected, atol=1e-6)
    # gradient clipping: the gradients the optimisers stepped with have norm <= grad_clip_norm
    agent.config.grad_clip_norm = 1e-3
    out = agent.update(buf, 51)
    assert out["grad_norm"] > 1e-3
    for params in (agent.optim.param_groups[0]["params"], list(agent.model.policy.parameters())):
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params
                                                     if p.grad is not None]))
        assert norm <= 1e-3 * (1 + 1e-4)


def test_episodic_tasks_cut_the_bootstrap_learn_termination_and_stop_planning_at_it():
    """InvertedPendulum terminates: TD-MPC turns episodic by itself (TD-MPC2's pattern); built without it, the
    first terminal transition is refused instead of being learned as if the episode went on."""
    env = make_env("InvertedPendulum-v5", seed=0)
    buf = random_buffer(env, 300)
    assert buf.terminated[:buf.size].any()
    agent = make("tdmpc", env, seed=0, **{**TINY, "pretrain_updates": 1})
    assert agent.config.episodic and agent.model.term is not None
    assert not make("tdmpc", make_env("Pendulum-v1", seed=0), seed=0, **TINY).config.episodic
    out = agent.update(buf, 60)
    assert torch.isfinite(torch.as_tensor(out["termination_loss"]))
    # the TD target of a terminal step is its reward alone
    b, h = 4, agent.config.horizon
    obs = torch.randn(b, agent.obs_dim)
    action = torch.rand(h, b, agent.action_dim) * 2 - 1
    reward, next_obs = torch.randn(h, b), torch.randn(h, b, agent.obs_dim)
    rho = agent.config.rho ** torch.arange(h, dtype=torch.float32).unsqueeze(1)
    noise = torch.zeros(h * b, agent.action_dim)
    ones = torch.ones(h, b)
    with torch.no_grad():
        _, _, value_loss, term_loss, *_ , z_all = agent._model_loss(obs, action, reward, next_obs, ones, torch.ones(b),
                                                                    rho, noise, None)
        q = agent.model.Q(z_all[:-1].reshape(h * b, -1), action.reshape(h * b, -1)).view(-1, h, b)
        assert torch.allclose(value_loss, (rho * ((q - reward) ** 2).sum(0)).sum(0), atol=1e-5)
        logits = agent.model.termination_logit(z_all[1:].reshape(h * b, -1)).view(h, b)
        expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, ones, reduction="none").mean(0)
        assert torch.allclose(term_loss, expected, atol=1e-6)
        # planning: after a predicted termination neither rewards nor the terminal value count
        z = agent.model.h(torch.randn(5, agent.obs_dim))
        acts = torch.rand(h, 5, agent.action_dim) * 2 - 1
        pi_noise = torch.zeros(5, agent.action_dim)
        agent.model.term.linears[-1].bias.fill_(10.0)  # always "terminated"
        _, r0 = agent.model.next(z, acts[0])
        assert torch.allclose(agent._latent_value(z, acts, pi_noise, None), r0, atol=1e-5)
        agent.model.term.linears[-1].bias.fill_(-10.0)  # never
        agent.config.episodic = False
        full = agent._latent_value(z, acts, pi_noise, None)
        agent.config.episodic = True
        assert torch.allclose(agent._latent_value(z, acts, pi_noise, None), full, atol=1e-5)
    refused = make("tdmpc", env, seed=0, **{**TINY, "episodic": False})
    with pytest.raises(ValueError, match="ended an episode by termination.*episodic=True"):
        refused.update(buf, 10)


def test_planning_respects_bounds_schedules_and_warm_start():
    env = make_env("Pendulum-v1", seed=0)
    agent = make("tdmpc", env, seed=0, **TINY)
    obs, _ = env.reset(seed=0)
    assert agent.planning_horizon() == 1  # official horizon schedule starts at 1
    agent.step = agent.config.schedule_steps
    assert agent.planning_horizon() == 3
    agent.reset()
    for _ in range(5):
        a = agent.act(obs)
        assert a.shape == (1,) and a.dtype == np.float32 and np.all(np.abs(a) <= 1)
        assert agent._prev_mean.shape == (3, 1, 1)  # [H, B, A]
        obs = env.step(a)[0]
    a1, a2 = agent.act(obs, deterministic=True), agent.act(obs, deterministic=True)
    assert np.all(np.abs(a1) <= 1) and np.all(np.abs(a2) <= 1)
    agent.reset()
    assert agent._prev_mean is None and agent._t0
    assert linear_schedule(0.5, 0.05, 100, 50) == pytest.approx(0.275) and linear_schedule(0.5, 0.05, 100, 500) == 0.05
    assert default_action_repeat("dmc:cartpole-swingup") == 8 and default_action_repeat("dmc:cheetah-run") == 4
    assert default_action_repeat("Pendulum-v1") == 1
    cfg = TDMPCConfig()
    assert (cfg.horizon, cfg.num_samples, cfg.num_elites, cfg.iterations, cfg.explore_steps) == (5, 512, 64, 6, 5000)
    with pytest.raises(ValueError, match="num_elites"):
        make("tdmpc", env, num_samples=8, num_elites=20)


def reference_plan(agent, obs, deterministic, state):
    """TD-MPC's planner as written before it moved onto the sampling core (one problem, [H, N, A] layout,
    the official ``TDMPC.plan`` step by step); ``state`` holds its warm start between calls."""
    c, gen, dim, model = agent.config, agent.plan_gen, agent.action_dim, agent.model
    h = agent.planning_horizon()
    z0 = model.h(torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1))
    num_pi = int(c.mixture_coef * c.num_samples)
    pi_actions = torch.empty(h, num_pi, dim)
    z = z0.expand(num_pi, -1)
    for t in range(h):
        pi_actions[t] = model.pi(z, c.min_std, gen)
        z, _ = model.next(z, pi_actions[t])
    z = z0.expand(c.num_samples + num_pi, -1)
    mean, std = torch.zeros(h, dim), torch.full((h, dim), c.max_std)
    if state.get("prev") is not None:
        k = min(h, state["prev"].shape[0]) - 1
        mean[:k] = state["prev"][1:k + 1]
    for _ in range(c.iterations):
        noise = torch.randn(h, c.num_samples, dim, generator=gen)
        actions = torch.cat([(mean.unsqueeze(1) + std.unsqueeze(1) * noise).clamp_(-1, 1), pi_actions], dim=1)
        g, discount, zz = torch.zeros(actions.shape[1]), 1.0, z
        for a in actions:
            zz, r = model.next(zz, a)
            g, discount = g + discount * r, discount * c.discount
        value = (g + discount * model.q_min(zz, model.pi(zz, c.min_std, gen), gen)).nan_to_num_(0.0)
        elite_value, idx = torch.topk(value, c.num_elites)
        elites = actions[:, idx]
        score = torch.softmax((elite_value - elite_value.max()) / c.temperature, dim=0)
        new_mean = torch.einsum("k,hka->ha", score, elites)
        new_std = torch.einsum("k,hka->ha", score, (elites - new_mean.unsqueeze(1)) ** 2).sqrt()
        mean, std = c.momentum * mean + (1 - c.momentum) * new_mean, new_std.clamp_(agent.std_floor, c.max_std)
    action = elites[0, torch.multinomial(score, 1, generator=gen)[0]]
    state["prev"] = mean
    if not deterministic:
        action = action + std[0] * torch.randn(dim, generator=gen)
    return action.clamp(-1.0, 1.0).numpy()


@torch.no_grad()
def test_planning_through_the_sampling_core_gives_the_previous_planners_actions():
    """Same seed, same model: the core-based planner picks the actions the hand-written loop picked,
    through the warm start, a growing horizon (1 -> 3 over the schedule) and both eval modes."""
    env = make_env("Pendulum-v1", seed=0)
    cfg = {**TINY, "schedule_steps": 8}
    new, old = make("tdmpc", env, seed=3, device="cpu", **cfg), make("tdmpc", env, seed=3, device="cpu", **cfg)
    old.model.load_state_dict(new.model.state_dict())
    obs, _ = env.reset(seed=0)
    state, gaps = {}, []
    for t in range(16):
        new.step = old.step = t
        deterministic = t % 3 == 2
        a_new = new.act(obs, deterministic=deterministic)
        a_old = reference_plan(old, obs, deterministic, state)
        gaps.append(float(np.abs(a_new - a_old).max()))
        obs = env.step(a_new)[0]
    assert max(gaps) < 1e-5, gaps
    assert torch.equal(new.plan_gen.get_state(), old.plan_gen.get_state())  # the same random draws, in order


def test_batched_planning_is_lockstep_per_problem():
    """A batch of B observations plans B problems at once, each with its own warm start: [B, A] actions,
    a [H, B, A] warm start, and a clear error when the batch size changes without a reset."""
    env = make_env("Pendulum-v1", seed=0)
    agent = make("tdmpc", env, seed=0, device="cpu", **TINY)
    agent.step = agent.config.schedule_steps
    obs = np.stack([env.reset(seed=i)[0] for i in range(4)])
    a = agent.act_batch(obs, deterministic=True)
    assert a.shape == (4, 1) and a.dtype == np.float32 and np.all(np.abs(a) <= 1)
    assert agent._prev_mean.shape == (3, 4, 1)
    with pytest.raises(ValueError, match="batch"):
        agent.act_batch(obs[:2])
    agent.reset()
    assert agent.act_batch(obs[:2]).shape == (2, 1)


# -- learning, resume, CLI -----------------------------------------------------------------------------
# The cpu preset with 64-unit networks, 64 samples, 3 iterations, batch 64, 400 seed steps and
# schedules over 2000 steps: the smallest setting measured to swing Pendulum-v1 up (docs/tdmpc.md).
SMALL = {"mlp_dim": 64, "enc_dim": 64, "num_samples": 64, "num_elites": 8, "iterations": 3, "batch_size": 64,
         "explore_steps": 400, "schedule_steps": 2000, "compile": False}  # eager: compiling would cost CI a minute


@pytest.mark.slow
def test_small_tdmpc_learns_pendulum_swing_up_in_1600_steps(tmp_path):
    """Seed 0, 3 evaluation episodes at 1600 steps: measured -88 (random policy: about -1200)."""
    cfg = TrainConfig("tdmpc", "Pendulum-v1", 1600, seed=0, preset="cpu", eval_every=800, eval_episodes=3)
    _, run = train(cfg, overrides=SMALL, out=tmp_path / "p", progress=False)
    assert float(rows(run)[-1]["eval_return"]) >= -200.0


def test_resume_after_crash_gives_the_same_curve(crash_and_resume):
    cfg = TrainConfig("tdmpc", "Pendulum-v1", 300, seed=1, eval_every=100, eval_episodes=1, buffer_capacity=1000)
    full, a, _, b = crash_and_resume(cfg, {**TINY, "explore_steps": 60}, crash_at=250)
    assert [r["env_step"] for r in a] == ["200", "300"]  # Pendulum episodes are 200 steps
    assert a == b
    assert "value_loss" in a[-1]
    ckpt = torch.load(full / "checkpoints" / "latest.pt", weights_only=False)
    assert {"optim", "pi_optim", "sampler", "target"} <= set(ckpt["agent"]) and ckpt["buffer"]["size"] == 300


def test_cli_train_and_eval(tmp_path, capsys):
    run = tmp_path / "cli"
    args = ["train", "tdmpc", "--env", "Pendulum-v1", "--steps", "200", "--eval-every", "200", "--eval-episodes", "1",
            "--preset", "cpu", "--no-compile", "--out", str(run), "--no-progress"]  # eager: compiling costs CI time
    for k, v in {**TINY, "explore_steps": 150}.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    assert main(args) == 0
    assert rows(run)[0]["env_step"] == "200"
    assert main(["train", "tdmpc", "--preset", "cpux"]) == 2
    assert "cpu" in capsys.readouterr().out
    assert main(["eval", str(run), "--episodes", "1"]) == 0
    assert (run / "eval.json").exists()


def test_cli_uses_the_official_per_domain_action_repeat_and_settings_unless_given(tmp_path):
    import yaml

    base = ["train", "tdmpc", "--env", "dmc:cartpole-swingup", "--steps", "8", "--eval-every", "8",
            "--eval-episodes", "1", "--no-compile", "--no-progress", "--explore-steps", "8"]
    for k, v in TINY.items():
        if k != "explore_steps":
            base += [f"--{k.replace('_', '-')}", str(v)]
    for extra, repeat in (([], 8), (["--action-repeat", "2"], 2)):
        run = tmp_path / f"r{repeat}"
        assert main(base + extra + ["--out", str(run)]) == 0
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["train"]["action_repeat"] == repeat
    assert default_action_repeat("dmc:dog-run") == 2 and default_action_repeat("dmc:finger-spin") == 2
    dog = TDMPCConfig.task_defaults("dmc:dog-run")
    assert dog == {"iterations": 8, "latent_dim": 100, "batch_size": 2048, "lr": 3e-4}  # official cfgs/tasks/dog.yaml
    from modelrl.agents import build_config

    cfg = build_config(TDMPCConfig, "cpu", "dmc:humanoid-walk", latent_dim=64)
    assert (cfg.iterations, cfg.latent_dim) == (4, 64)  # the preset and the user's value win over the task's


@pytest.mark.slow
def test_compiled_latent_rollout_scores_candidates_as_the_eager_one():
    """``compile=True`` compiles the planner's latent rollout (and the update's losses) with the random draws
    kept outside: the same candidates and noise give the same values up to float rounding."""
    env = make_env("Pendulum-v1", seed=0)
    eager = make("tdmpc", env, seed=0, device="cpu", **TINY)
    compiled = make("tdmpc", env, seed=0, device="cpu", compile=True, **TINY)
    z = torch.randn(20, TINY["latent_dim"])
    actions, noise = torch.rand(3, 20, 1) * 2 - 1, torch.randn(20, 1)
    with torch.no_grad():
        want = eager._latent_value(z, actions, noise, None)
        got = compiled._value_fn(z, actions, noise, None)
    assert torch.allclose(got, want, atol=1e-5)
