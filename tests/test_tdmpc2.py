"""TD-MPC2: the pieces against hand-computed values, the world model, updates, planning, learning, resume, CLI."""

import math

import numpy as np
import pytest
import torch

from modelrl.agents import make
from modelrl.agents.tdmpc2 import MODEL_SIZES, TDMPC2Config, heuristic_discount, percentile_range
from modelrl.cli import main
from modelrl.envs import make_env
from modelrl.models.layers import mish
from modelrl.models.told import simnorm
from modelrl.models.world_model import TwoHot, WorldModel, symexp, symlog
from modelrl.runner.train import TrainConfig, train

from conftest import metrics_rows as rows
from conftest import random_buffer

# A deliberately tiny TD-MPC2: mechanics under test, not learning.
TINY = {"mlp_dim": 32, "enc_dim": 16, "latent_dim": 16, "num_samples": 16, "num_elites": 4, "num_pi_trajs": 4,
        "iterations": 2, "batch_size": 16, "explore_steps": 50, "num_bins": 11}


# -- the pieces, against hand-computed values -------------------------------------------------------------
def test_symlog_and_symexp():
    x = torch.tensor([math.e - 1, -(math.e**2 - 1), 0.0])
    assert torch.allclose(symlog(x), torch.tensor([1.0, -2.0, 0.0]))
    assert torch.allclose(symexp(torch.tensor([1.0, -2.0, 0.0])), x)
    y = torch.tensor([-1234.5, -3.0, -1e-3, 0.5, 77.0])
    assert torch.allclose(symexp(symlog(y)), y, rtol=1e-5)


def test_two_hot_encoding_round_trip_and_cross_entropy():
    th = TwoHot(num_bins=5, vmin=-2.0, vmax=2.0)  # bins at -2, -1, 0, 1, 2 in symlog space
    x = torch.tensor([math.exp(0.25) - 1, -(math.exp(1.5) - 1), 1e6, -1e6, math.e - 1])
    want = torch.tensor([[0, 0, 0.75, 0.25, 0],  # symlog 0.25: a quarter of the way from bin 0 to bin 1
                         [0.5, 0.5, 0, 0, 0],  # symlog -1.5: halfway between bins -2 and -1
                         [0, 0, 0, 0, 1],  # clamped to vmax
                         [1, 0, 0, 0, 0],  # clamped to vmin
                         [0, 0, 0, 1, 0]])  # exactly on a bin
    assert torch.allclose(th.encode(x), want, atol=1e-6)
    # decoding logits that put exactly the two-hot weights on the bins gives the scalar back (inside the range)
    logits = torch.log(th.encode(x).clamp_min(1e-30))
    assert torch.allclose(th.decode(logits)[[0, 1, 4]], x[[0, 1, 4]], rtol=1e-5)
    assert torch.allclose(th.decode(logits)[2], symexp(torch.tensor(2.0)), rtol=1e-5)
    # cross-entropy: -(0.75 log p_2 + 0.25 log p_3) for the first target
    pred = torch.randn(5)
    logp = torch.log_softmax(pred, -1)
    assert torch.allclose(th.cross_entropy(pred, x[0]), -(0.75 * logp[2] + 0.25 * logp[3]), atol=1e-6)
    # shapes: [..., bins] logits against [...] targets
    assert th.cross_entropy(torch.randn(3, 4, 5), torch.randn(3, 4)).shape == (3, 4)
    with pytest.raises(ValueError, match="num_bins"):
        TwoHot(num_bins=1)


def test_mish_through_sigmoid_is_mish_with_its_gradient():
    x = (torch.randn(2000) * 6).requires_grad_()
    y = mish(x)
    y.sum().backward()
    grad, x.grad = x.grad.clone(), None
    torch.nn.functional.mish(x).sum().backward()
    assert torch.allclose(y, torch.nn.functional.mish(x), atol=2e-6) and torch.allclose(grad, x.grad, atol=2e-6)
    far = torch.tensor([-300.0, 300.0, float("nan")])
    assert mish(far)[:2].tolist() == [0.0, 300.0] and torch.isnan(mish(far)[2])
    assert torch.autograd.gradcheck(mish, (torch.randn(30, dtype=torch.float64, requires_grad=True),))


def test_simnorm_is_a_softmax_per_group():
    z = torch.tensor([[0.0, math.log(3.0), 1.0, 1.0]])
    out = simnorm(z, 2)
    assert torch.allclose(out, torch.tensor([[0.25, 0.75, 0.5, 0.5]]))
    # leading axes and gradients as the plain softmax of each group (simnorm computes it transposed)
    z = (5 * torch.randn(3, 4, 24, dtype=torch.float64)).requires_grad_()
    plain = torch.softmax(z.view(3, 4, 3, 8), dim=-1).view(3, 4, 24)
    g = torch.randn(3, 4, 24, dtype=torch.float64)
    assert torch.allclose(simnorm(z, 8), plain)
    assert torch.allclose(torch.autograd.grad(simnorm(z, 8), z, g)[0], torch.autograd.grad(plain, z, g)[0])


def test_percentile_range_and_the_running_scale():
    # 101 values 0..100: the 5th and 95th percentiles are 5 and 95
    assert float(percentile_range(torch.arange(101.0))) == pytest.approx(90.0)
    # two values 0 and 10: positions 0.05 and 0.95 between them -> 0.5 and 9.5 (linear interpolation)
    assert float(percentile_range(torch.tensor([[10.0], [0.0]]))) == pytest.approx(9.0)
    # the agent's scale starts at 1 and moves by tau towards max(range, 1) in each policy update
    env = make_env("Pendulum-v1", seed=0)
    agent = make("tdmpc2", env, seed=0, device="cpu", **TINY)
    assert float(agent.scale) == 1.0
    z = agent.model.h(torch.randn(2, 5, 3)).detach()  # [H + 1 = 2, B = 5, L]
    rho = torch.tensor([1.0, 0.5])
    noise, pick = torch.randn(10, 1), torch.tensor([0, 1])
    agent.model.eval()
    _, new_scale, _ = agent._policy_loss(z, rho, noise, pick, torch.tensor(3.0))
    sample = agent.model.pi(z.reshape(10, -1), noise=noise)
    q = agent.model.q_value(z.reshape(10, -1), sample.action, pick, reduce="avg").view(2, 5)
    want = 3.0 + 0.01 * (max(float(percentile_range(q[0])), 1.0) - 3.0)
    assert float(new_scale) == pytest.approx(want, rel=1e-6)


def test_discount_heuristic_and_seed_steps_from_the_episode_length():
    assert heuristic_discount(500) == pytest.approx(0.99)  # DeepMind Control at action repeat 2: 1000 / 2
    assert heuristic_discount(200) == pytest.approx(0.975)  # Pendulum-v1
    assert heuristic_discount(10) == 0.95  # (2 - 1) / 2 = 0.5, clipped up
    assert heuristic_discount(10_000) == 0.995  # 0.9995, clipped down
    assert heuristic_discount(None) == 0.995
    agent = make("tdmpc2", make_env("Pendulum-v1", seed=0), seed=0, device="cpu", **{**TINY, "explore_steps": None})
    assert (agent.config.discount, agent.config.explore_steps) == (pytest.approx(0.975), 1000)
    env = make_env("dmc:cartpole-swingup", seed=0, action_repeat=TDMPC2Config.default_action_repeat("dmc:cartpole"))
    agent = make("tdmpc2", env, seed=0, device="cpu", **{**TINY, "explore_steps": None})
    assert agent.episode_length == 500
    assert (agent.config.discount, agent.config.explore_steps) == (pytest.approx(0.99), 2500)  # max(1000, 5 x 500)
    fixed = make("tdmpc2", env, seed=0, device="cpu", **{**TINY, "discount": 0.9})
    assert fixed.config.discount == 0.9


def test_iterations_grow_by_two_for_large_action_spaces():
    small = make("tdmpc2", make_env("Pendulum-v1", seed=0), seed=0, device="cpu", **TINY)
    large = make("tdmpc2", make_env("dmc:humanoid-walk", seed=0), seed=0, device="cpu", **TINY)  # 21 actions
    assert (small.iterations, large.iterations) == (2, 4)
    assert large.planner_settings().iterations == 4


# -- the world model ----------------------------------------------------------------------------------
def test_world_model_shapes_init_and_sizes():
    m = WorldModel(5, 2, latent_dim=16, enc_dim=8, mlp_dim=32, num_q=3, num_bins=11, seed=0)
    z = m.h(torch.randn(7, 5))
    assert z.shape == (7, 16) and torch.allclose(z.view(7, 2, 8).sum(-1), torch.ones(7, 2))  # SimNorm groups
    a = torch.rand(7, 2) * 2 - 1
    z2, r = m.next(z, a)
    assert z2.shape == (7, 16) and r.shape == (7, 11)
    # zero last layers of R and of every Q: reward and values start at exactly 0 (bins symmetric about 0)
    assert torch.allclose(m.step(z, a)[1], torch.zeros(7), atol=1e-6)
    assert m.q_logits(z, a).shape == (3, 7, 11)
    assert torch.allclose(m.q_value(z, a, torch.tensor([0, 2])), torch.zeros(7), atol=1e-6)
    # weights: normal with std 0.02, zero biases
    w = m.encoder.linears[0].weight.detach()
    assert abs(float(w.std()) - 0.02) < 0.005 and float(m.encoder.linears[0].bias.detach().abs().max()) == 0.0
    # the policy: actions inside (-1, 1); the entropy term is A times the pre-squash Gaussian entropy estimate
    s = m.pi(z, noise=torch.zeros(7, 2))
    assert torch.all(s.action.abs() < 1) and torch.allclose(s.action, s.mean)  # zero noise: the mean
    mu, raw = m.policy(z).chunk(2, dim=-1)
    log_std = -10 + 0.5 * 12 * (torch.tanh(raw) + 1)
    gaussian = (-log_std).sum(-1) - 2 * 0.5 * math.log(2 * math.pi)
    assert torch.allclose(s.scaled_entropy, -2 * gaussian, rtol=1e-4)
    # the official model sizes: about 1M and 5M parameters on a small task
    one = WorldModel(24, 6, **{k: v for k, v in MODEL_SIZES["1m"].items()}, seed=0).parameter_count()
    five = WorldModel(24, 6, seed=0).parameter_count()
    assert 0.9e6 < one < 1.6e6 and 4.5e6 < five < 5.8e6


def test_q_dropout_is_on_the_first_layer_only_and_only_while_training():
    m = WorldModel(3, 1, latent_dim=8, enc_dim=8, mlp_dim=16, num_q=2, num_bins=5, dropout=0.5, seed=0)
    assert m.q._drop == [0.5, 0.0]
    x = torch.cat([m.h(torch.randn(50, 3)), torch.zeros(50, 1)], dim=-1)
    torch.manual_seed(0)
    m.eval()
    assert torch.equal(m.q.hidden_features(x), m.q.hidden_features(x))  # (the last layer starts at zero)
    m.train()
    assert not torch.equal(m.q.hidden_features(x), m.q.hidden_features(x))


# -- updates and planning ---------------------------------------------------------------------------------
def test_update_trains_every_part_and_moves_only_the_q_targets_by_tau():
    env = make_env("Pendulum-v1", seed=0)
    agent = make("tdmpc2", env, seed=0, device="cpu", **{**TINY, "pretrain_updates": 1})
    buf = random_buffer(env, 200)
    before = {k: v.clone() for k, v in agent.model.state_dict().items()}
    target_before = {k: v.clone() for k, v in agent.target.state_dict().items()}
    assert agent.update(buf, 10) == {}  # seed steps: nothing yet
    out = agent.update(buf, 50)
    assert {"consistency_loss", "reward_loss", "value_loss", "pi_loss", "grad_norm", "pi_scale"} <= set(out)
    assert all(np.isfinite(float(v)) for v in out.values())
    after = agent.model.state_dict()
    for part in ("encoder", "enc_norm", "dyn_rew", "dyn_norm", "policy", "q."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(part)), part
    k = "layers.1.weight"
    expected = (1 - 0.01) * target_before[k] + 0.01 * after["q." + k]
    assert torch.allclose(agent.target.state_dict()[k], expected, atol=1e-7)
    assert not agent.model.training and not agent.target.training  # dropout off again for planning
    # the encoder learns at 0.3 x the rate of the rest
    assert [g["lr"] for g in agent.optim.param_groups] == [pytest.approx(3e-4 * 0.3), 3e-4]
    assert agent.pi_optim.param_groups[0]["eps"] == 1e-5


def test_episodic_tasks_cut_the_td_target_learn_termination_and_stop_planning_at_it():
    env = make_env("InvertedPendulum-v5", seed=0)
    agent = make("tdmpc2", env, seed=0, device="cpu", **{**TINY, "pretrain_updates": 1})
    assert agent.config.episodic and agent.model.term is not None  # resolved: InvertedPendulum terminates
    buf = random_buffer(env, 300)
    out = agent.update(buf, 50)
    assert "termination_loss" in out and np.isfinite(float(out["termination_loss"]))
    h, b = 3, 4
    obs, action = torch.randn(b, agent.obs_dim), torch.rand(h, b, 1) * 2 - 1
    reward, next_obs, ones = torch.randn(h, b), torch.randn(h, b, agent.obs_dim), torch.ones(h, b)
    rho = 0.5 ** torch.arange(h + 1, dtype=torch.float32)
    agent.model.eval()
    with torch.no_grad():
        _, _, value_loss, term_loss, _, zs = agent._world_model_loss(obs, action, reward, next_obs, ones, rho,
                                                                     torch.zeros(h * b, 1), torch.tensor([0, 1]))
        # every step terminal: the TD target is the reward alone
        k = agent.model.num_q
        q = agent.model.q_logits(zs[:-1].reshape(h * b, -1), action.reshape(h * b, -1)).view(k, h, b, -1)
        ce = agent.model.two_hot.cross_entropy(q, reward.unsqueeze(0))  # [K, H, B]
        assert torch.allclose(value_loss, (rho[:h] * ce.mean(2)).sum() / (h * k), atol=1e-5)
        logits = agent.model.termination_logit(zs[1:].reshape(h * b, -1)).view(h, b)
        assert torch.allclose(term_loss, torch.nn.functional.binary_cross_entropy_with_logits(logits, ones))
        # planning: after a predicted termination neither rewards nor the terminal value count
        z = agent.model.h(torch.randn(5, agent.obs_dim))
        acts, noise, pick = torch.rand(h, 5, 1) * 2 - 1, torch.zeros(5, 1), torch.tensor([0, 1])
        agent.model.term.linears[-1].bias.fill_(10.0)  # always "terminated"
        first = agent.model.step(z, acts[0])[1]
        assert torch.allclose(agent._latent_value(z, acts, noise, pick), first, atol=1e-5)
    refused = make("tdmpc2", env, seed=0, device="cpu", **{**TINY, "episodic": False})
    with pytest.raises(ValueError, match="ended an episode by termination"):
        refused.update(buf, 10)


def test_planning_fixed_horizon_and_std_policy_trajectories_and_lockstep_batches():
    env = make_env("Pendulum-v1", seed=0)
    agent = make("tdmpc2", env, seed=0, device="cpu", **TINY)
    agent.update(random_buffer(env, 10), 0)  # step 0: the floor is min_std from the start (no schedule)
    assert agent.planning_horizon() == 3 and agent.std_floor == 0.05
    s = agent.planner_settings()
    assert (s.num_samples, s.momentum, s.min_std, s.max_std) == (12, 0.0, 0.05, 2.0)  # 16 - 4 policy trajectories
    obs = np.stack([env.reset(seed=i)[0] for i in range(3)])
    a = agent.act_batch(obs, deterministic=True)
    assert a.shape == (3, 1) and np.all(np.abs(a) <= 1) and agent._prev_mean.shape == (3, 3, 1)
    z0 = agent.model.h(torch.as_tensor(obs))
    pi = agent._policy_actions(z0, 3)
    assert pi.shape == (3, 3, 4, 1) and torch.all(pi.abs() < 1)
    # the value of a candidate: sum_t gamma^t R + gamma^H Q_avg(z_H, pi(z_H)), by hand
    z, actions, noise, pick = z0, torch.rand(3, 3, 1) * 2 - 1, torch.randn(3, 1), torch.tensor([1, 0])
    with torch.no_grad():
        got = agent._latent_value(z, actions, noise, pick)
        g, d, m = torch.zeros(3), 1.0, agent.model
        for t in range(3):
            z, r = m.next(z, actions[t])
            g, d = g + d * m.two_hot.decode(r), d * agent.config.discount
        want = g + d * m.q_value(z, m.pi(z, noise=noise).action, pick, reduce="avg")
    assert torch.allclose(got, want, atol=1e-6)


# -- learning, resume, CLI -----------------------------------------------------------------------------
SMALL = {"mlp_dim": 64, "enc_dim": 64, "latent_dim": 32, "num_samples": 64, "num_elites": 8, "num_pi_trajs": 6,
         "iterations": 3, "batch_size": 64}  # the official 1000 seed steps (max(1000, 5 x 200)) and their updates


@pytest.mark.slow
def test_small_tdmpc2_learns_pendulum_swing_up(tmp_path):
    """Seed 0, 3 evaluation episodes at 1600 steps. Measured (2026-11-30): -136 for seed 0, -543 and -588 for seeds
    1 and 2 (one of the three episodes not swung up); a random policy scores about -1200 (-951 to -1195 at 400 steps).
    The threshold asks for the swing-up on most episodes, with room for float rounding to change the seed's run."""
    cfg = TrainConfig("tdmpc2", "Pendulum-v1", 1600, seed=0, eval_every=400, eval_episodes=3)
    _, run = train(cfg, overrides=SMALL, out=tmp_path / "p", progress=False)
    curve = [float(r["eval_return"]) for r in rows(run)]
    assert curve[0] < -800.0 and curve[-1] >= -700.0


def test_resume_after_crash_gives_the_same_curve(crash_and_resume):
    cfg = TrainConfig("tdmpc2", "Pendulum-v1", 300, seed=1, eval_every=100, eval_episodes=1, buffer_capacity=1000)
    full, a, _, b = crash_and_resume(cfg, {**TINY, "explore_steps": 60}, crash_at=250)
    assert [r["env_step"] for r in a] == ["200", "300"]  # Pendulum episodes are 200 steps
    assert a == b
    assert "value_loss" in a[-1] and "pi_scale" in a[-1]
    ckpt = torch.load(full / "checkpoints" / "latest.pt", weights_only=False)
    assert {"optim", "pi_optim", "sampler", "target", "scale"} <= set(ckpt["agent"])


def test_cli_train_and_eval_and_presets(tmp_path, capsys):
    run = tmp_path / "cli"
    args = ["train", "tdmpc2", "--env", "Pendulum-v1", "--steps", "200", "--eval-every", "200", "--eval-episodes", "1",
            "--out", str(run), "--no-progress"]
    for k, v in {**TINY, "explore_steps": 150}.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    assert main(args) == 0
    assert rows(run)[0]["env_step"] == "200"
    assert main(["eval", str(run), "--episodes", "1"]) == 0
    assert main(["train", "tdmpc2", "--preset", "2m"]) == 2
    assert "1m" in capsys.readouterr().out
    from modelrl.agents import build_config

    cfg = build_config(TDMPC2Config, "1m", "Pendulum-v1", mlp_dim=100)
    assert (cfg.latent_dim, cfg.num_q, cfg.mlp_dim) == (128, 2, 100)  # the size's values, then the user's
    assert TDMPC2Config.default_action_repeat("dmc:walker-walk") == 2
    assert TDMPC2Config.default_action_repeat("Pendulum-v1") == 1


def test_matmul_precision_is_the_official_high_set_on_cuda_only():
    """Official train.py sets float32 matmul precision 'high' (TF32 on GPUs); an agent on the CPU leaves the
    process's setting alone, an unknown value is refused, and on CUDA (where it exists) the agent sets it."""
    env = make_env("Pendulum-v1", seed=0)
    assert TDMPC2Config().matmul_precision == "high"
    before = torch.get_float32_matmul_precision()
    make("tdmpc2", env, preset="cpu", seed=0, device="cpu", matmul_precision="medium")
    assert torch.get_float32_matmul_precision() == before
    with pytest.raises(ValueError, match="matmul_precision"):
        make("tdmpc2", env, preset="cpu", seed=0, device="cpu", matmul_precision="tf32")
    if torch.cuda.is_available():
        try:
            make("tdmpc2", env, preset="cpu", seed=0, device="cuda", matmul_precision="medium")
            assert torch.get_float32_matmul_precision() == "medium"
        finally:
            torch.set_float32_matmul_precision(before)
