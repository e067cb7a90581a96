"""Learned dynamics: ensemble model, normaliser, trainer, LearnedDynamics, diagnostics."""
import numpy as np
import pytest
import torch

from modelrl.data.buffer import ReplayBuffer
from modelrl.envs import PendulumDynamics
from modelrl.models import (
    EnsembleModel,
    LearnedDynamics,
    ModelTrainer,
    Normalizer,
    episodes_from_arrays,
    episodes_from_buffer,
    k_step_error,
    make_model,
    one_step_error,
    predicted_trajectory,
)
from modelrl.planners import MPPI, rollout_returns
from modelrl.types import Dynamics, terminal_fn

UNIT = (np.array([-1.0]), np.array([1.0]))
SMALL = dict(hidden_size=32, num_layers=2)  # small networks keep the unit tests fast


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Networks this small train fastest on one thread; more threads only contend for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pendulum_data(n: int, seed: int):
    """Transitions of the true pendulum from uniform random states and actions."""
    g = torch.Generator().manual_seed(seed)
    th = (torch.rand(n, generator=g) * 2 - 1) * np.pi
    thdot = (torch.rand(n, generator=g) * 2 - 1) * 8.0
    obs = torch.stack([th.cos(), th.sin(), thdot], 1)
    action = torch.rand(n, 1, generator=g) * 2 - 1
    next_obs, reward = PendulumDynamics().step(obs, action)
    return obs, action, next_obs.contiguous(), reward


def pendulum_reward(obs, action, next_obs):
    return PendulumDynamics().step(obs, action)[1]


# -- normaliser ---------------------------------------------------------------------------------
def test_normalizer_round_trip_and_constant_feature():
    x = torch.randn(500, 3) * torch.tensor([10.0, 0.01, 0.0]) + torch.tensor([5.0, -2.0, 7.0])
    norm = Normalizer(3)
    norm.fit(x)
    z = norm.normalize(x)
    assert torch.allclose(z[:, :2].mean(0), torch.zeros(2), atol=1e-4)
    assert torch.allclose(z[:, :2].std(0, correction=0), torch.ones(2), atol=1e-4)
    assert norm.std[2] == 1.0 and torch.all(z[:, 2] == 0)  # constant feature: centred, not scaled
    assert torch.allclose(norm.denormalize(z), x, atol=1e-4)
    assert set(norm.state_dict()) == {"mean", "std"}
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        norm.fit(torch.zeros(4, 2))


# -- ensemble model -----------------------------------------------------------------------------
def test_ensemble_shapes_and_state_dict_contents():
    m = EnsembleModel(3, 1, ensemble_size=4, learn_reward=True, learn_termination=True, seed=0, **SMALL)
    x = torch.randn(4, 7, 4)
    mean, logvar = m(x)
    assert mean.shape == (4, 7, 5) and logvar.shape == (4, 7, 4)  # [s'-s (3), r] + termination logit
    mean2, _ = m(x[0])  # [B, in] is shared by all members
    assert mean2.shape == (4, 7, 5)
    pred = m.predict(torch.randn(7, 3), torch.randn(7, 1))
    assert pred.next_obs.shape == (7, 3) and pred.reward.shape == (7,) and pred.terminated.dtype == torch.bool
    pred = m.predict(torch.randn(7, 3), torch.randn(7, 1), member_idx=torch.arange(7) % 4, sample=True)
    assert pred.next_obs.shape == (7, 3)
    keys = set(m.state_dict())
    assert {"elite_idx", "input_normalizer.mean", "target_normalizer.std", "max_logvar", "min_logvar"} <= keys
    mlp = make_model("mlp", 3, 1, **SMALL)
    assert mlp.ensemble_size == 1 and not mlp.probabilistic
    mean, logvar = mlp(torch.randn(5, 4))
    assert mean.shape == (1, 5, 3) and logvar is None
    with pytest.raises(ValueError, match="kind"):
        make_model("gp", 3, 1)
    with pytest.raises(ValueError, match="num_elites"):
        EnsembleModel(3, 1, ensemble_size=3, num_elites=4)


def test_members_differ_at_init_and_seed_reproduces():
    m = EnsembleModel(3, 1, ensemble_size=5, seed=0, **SMALL)
    mean, _ = m(torch.randn(10, 4))
    spread = (mean - mean.mean(0)).abs().amax((1, 2))
    assert torch.all(spread > 1e-3)
    m2 = EnsembleModel(3, 1, ensemble_size=5, seed=0, **SMALL)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))


def test_logvar_stays_within_soft_bounds():
    m = EnsembleModel(3, 1, ensemble_size=3, seed=0, **SMALL)
    with torch.no_grad():
        m.max_logvar.copy_(torch.tensor([0.5, 1.0, -1.0]).view(3, 1, 1).expand_as(m.max_logvar))
        m.min_logvar.fill_(-5.0)
    x = torch.randn(3, 200, 4) * torch.logspace(-2, 4, 200).view(1, 200, 1)  # far off the data
    _, logvar = m(x)
    slack = torch.nn.functional.softplus(m.min_logvar - m.max_logvar) + 1e-6  # soft: overshoot <= log(1 + e^-(max-min))
    assert torch.all(logvar <= m.max_logvar + slack) and torch.all(logvar >= m.min_logvar - slack)
    assert logvar.max() > 0.4 and logvar.min() < -4.9  # the bounds are reached, not just respected


# -- trainer ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mlp", "ensemble"])
def test_fit_pendulum_one_step_error(kind):
    obs, action, next_obs, _ = pendulum_data(2500, seed=0)
    model = make_model(kind, 3, 1, hidden_size=64, num_layers=2, seed=0)
    trainer = ModelTrainer(model, lr=3e-3, batch_size=64, max_epochs=30, patience=30, seed=0)
    metrics = trainer.fit(obs, action, next_obs)
    assert np.all(metrics["holdout_mse"] < 0.01)  # normalised targets: 1% of their variance
    test = one_step_error(model, *pendulum_data(2000, seed=1)[:3])
    assert test["normalized_mse"] < 0.01, test
    assert test["rmse_per_dim"].shape == (3,)


def test_early_stopping_on_tiny_data():
    obs, action, next_obs, _ = pendulum_data(40, seed=0)
    next_obs = next_obs + 0.3 * torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    model = make_model("ensemble", 3, 1, ensemble_size=2, seed=0, **SMALL)
    trainer = ModelTrainer(model, lr=1e-2, batch_size=8, max_epochs=500, patience=5, seed=0)
    metrics = trainer.fit(obs.numpy(), action.numpy().astype(np.float64), next_obs.numpy())  # numpy works too
    assert 5 <= metrics["epochs"] < 100


def test_holdout_cap_and_mbpo_first_best_at_infinity():
    """MBPO's BNN holds out min(0.2 N, 5000) rows and starts each member's best at 1e10, so a fit always ends
    on weights of its own epochs; mbrl-lib (the default here) scores the pre-fit weights first and keeps them
    when no epoch beats them."""
    obs, action, next_obs, _ = pendulum_data(600, seed=0)
    model = make_model("ensemble", 3, 1, ensemble_size=2, seed=0, **SMALL)
    ModelTrainer(model, lr=3e-3, batch_size=32, max_epochs=20, seed=0).fit(obs, action, next_obs)
    fitted = {k: v.clone() for k, v in model.state_dict().items()}
    for keep, same in ((True, True), (False, False)):
        model.load_state_dict(fitted)
        ruin = ModelTrainer(model, lr=1.0, batch_size=32, max_epochs=1, max_holdout=50, keep_pre_fit=keep, seed=1)
        metrics = ruin.fit(obs, action, next_obs)  # one epoch at lr 1 only makes the model worse
        assert metrics["num_holdout"] == 50  # min(0.2 * 600, 50)
        kept = all(torch.equal(model.state_dict()[k], v) for k, v in fitted.items() if "normalizer" not in k)
        assert kept == same, keep


def test_elites_are_lowest_holdout_members_with_their_best_weights():
    obs, action, next_obs, _ = pendulum_data(600, seed=0)
    model = make_model("ensemble", 3, 1, ensemble_size=5, num_elites=2, seed=0, **SMALL)
    trainer = ModelTrainer(model, lr=3e-3, batch_size=32, max_epochs=8, seed=0)
    metrics = trainer.fit(obs, action, next_obs)
    best = metrics["holdout_mse"]
    assert sorted(model.elite_idx.tolist()) == sorted(np.argsort(best)[:2].tolist())
    assert len(set(best.tolist())) == 5  # bootstrapped members end up different
    # The restored weights are each member's best: re-scoring them on the hold-out reproduces it.
    hold = torch.as_tensor(trainer.holdout_idx)
    x = model.input_normalizer.normalize(torch.cat([obs, action], 1)[hold])
    y = model.target_normalizer.normalize((next_obs - obs)[hold])
    assert np.allclose(model.member_mse(x, y).numpy(), best, rtol=1e-5)


def test_state_dict_round_trip_resumes_exactly():
    obs, action, next_obs, _ = pendulum_data(300, seed=0)
    more = pendulum_data(300, seed=1)[:3]
    kw = dict(lr=3e-3, batch_size=32, max_epochs=3, seed=0)
    a = make_model("ensemble", 3, 1, ensemble_size=3, seed=0, **SMALL)
    ta = ModelTrainer(a, **kw)
    ta.fit(obs, action, next_obs)
    b = make_model("ensemble", 3, 1, ensemble_size=3, seed=1, **SMALL)
    tb = ModelTrainer(b, **{**kw, "seed": 1})
    b.load_state_dict(a.state_dict())
    tb.load_state_dict(ta.state_dict())
    s, u = more[0][:50], more[1][:50]
    assert torch.equal(a.predict(s, u).next_obs, b.predict(s, u).next_obs)
    ma, mb = ta.fit(*more), tb.fit(*more)  # continues with the same optimiser moments and RNG
    assert np.array_equal(ma["holdout_mse"], mb["holdout_mse"])
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_training_data_raises(bad):
    obs, action, next_obs, _ = pendulum_data(20, seed=0)
    action = action.clone()
    action[7, 0] = bad
    trainer = ModelTrainer(make_model("mlp", 3, 1, **SMALL), seed=0)
    with pytest.raises(ValueError, match=r"action contains NaN or inf .* row 7"):
        trainer.fit(obs, action, next_obs)
    with pytest.raises(ValueError, match=r"next_obs must have shape \[20, 3\]"):
        trainer.fit(obs, action.nan_to_num(), next_obs[:, :2])


def test_learned_reward_and_termination_heads():
    obs, action, next_obs, reward = pendulum_data(1500, seed=0)
    terminated = obs[:, 2] > 6.0  # a made-up termination: fast spin
    model = make_model("ensemble", 3, 1, ensemble_size=2, learn_reward=True, learn_termination=True,
                       hidden_size=64, num_layers=2, seed=0)
    ModelTrainer(model, lr=3e-3, batch_size=64, max_epochs=25, seed=0).fit(obs, action, next_obs, reward, terminated)
    test = pendulum_data(500, seed=1)
    pred = model.predict(test[0], test[1])
    assert ((pred.reward - test[3]) ** 2).mean() < 0.05 * test[3].var()
    assert (pred.terminated == (test[0][:, 2] > 6.0)).float().mean() > 0.9
    dyn = LearnedDynamics(model, mode="mean")
    assert terminal_fn(dyn) is not None
    s, r = dyn.step(test[0], test[1])
    assert r.shape == (500,) and dyn.terminal(s).shape == (500,)
    with pytest.raises(ValueError, match="step"):
        dyn.terminal(s.clone())
    assert torch.isfinite(rollout_returns(dyn, test[0][0], torch.zeros(4, 3, 1))).all()
    with pytest.raises(ValueError, match="reward"):
        ModelTrainer(model).fit(obs, action, next_obs)


# -- LearnedDynamics ----------------------------------------------------------------------------
def differing_model(probabilistic: bool = False) -> EnsembleModel:
    """An untrained ensemble whose members disagree (random init), elites 3 and 1 of 4."""
    m = EnsembleModel(3, 1, ensemble_size=4, num_elites=2, probabilistic=probabilistic, seed=0, **SMALL)
    m.set_elites([3, 1])
    return m


def test_learned_dynamics_protocol_and_errors():
    m = differing_model()
    dyn = LearnedDynamics(m, reward_fn=pendulum_reward, mode="mean")
    assert isinstance(dyn, Dynamics) and terminal_fn(dyn) is None
    assert dyn.state_dim == 3 and dyn.action_dim == 1 and dyn.particles == 1
    assert LearnedDynamics(m, reward_fn=pendulum_reward).particles == 20
    dyn_t = LearnedDynamics(m, reward_fn=pendulum_reward, termination_fn=lambda s: s[:, 0] > 0)
    assert terminal_fn(dyn_t) is not None
    with pytest.raises(ValueError, match="reward"):
        LearnedDynamics(m)
    with pytest.raises(ValueError, match="mode"):
        LearnedDynamics(m, reward_fn=pendulum_reward, mode="ts2")


def test_ts_inf_maps_row_to_particle_elite():
    m = differing_model()
    P = 3
    dyn = LearnedDynamics(m, reward_fn=pendulum_reward, mode="ts_inf", particles=P)
    s = torch.randn(5, 3).repeat_interleave(P, 0)  # 5 candidates x 3 particles, candidate-major
    a = torch.randn(5, 1).repeat_interleave(P, 0)
    nxt, r = dyn.step(s, a)
    x = m.input_normalizer.normalize(torch.cat([s, a], 1))
    every, _ = m(x)  # [E, B, S]: each member on each row
    rows = torch.arange(15)
    member = m.elite_idx[(rows % P) % m.num_elites]
    assert member[:3].tolist() == [3, 1, 3]
    expect = s + m.target_normalizer.denormalize(every[member, rows])
    assert torch.allclose(nxt, expect, atol=1e-5)
    assert torch.allclose(r, pendulum_reward(s, a, nxt))
    nxt2, _ = dyn.step(s, a)
    assert torch.equal(nxt, nxt2)  # fixed over the rollout


def test_ts_inf_with_particles_a_multiple_of_the_elites_takes_the_strided_path_with_the_same_numbers():
    """P = 4 particles over 2 elites: row i's member is elite i % 2, run as one strided batch (no sort, no
    gather); the next states, the sampled noise included, equal those of the row-gathering path."""
    m = differing_model(probabilistic=True)
    elites = m.num_elites
    P = 2 * elites
    s, a = torch.randn(6 * P, 3), torch.randn(6 * P, 1)
    fast = LearnedDynamics(m, reward_fn=pendulum_reward, mode="ts_inf", particles=P, seed=0)
    nxt, r = fast.step(s, a)
    member = (torch.arange(6 * P) % P) % elites
    slow = m.predict(s, a, m.elite_idx[member], sample=True, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(nxt, slow.next_obs, atol=1e-5)
    with pytest.raises(ValueError, match="multiple"):
        m.predict(s[:elites + 1], a[:elites + 1], sample=True, periodic=True)


def test_ts1_reproducible_with_seed_and_mean_deterministic():
    m = differing_model(probabilistic=True)
    s, a = torch.randn(64, 3), torch.randn(64, 1)

    def rollout(seed):
        dyn = LearnedDynamics(m, reward_fn=pendulum_reward, mode="ts1", seed=seed)
        x = s
        for _ in range(3):
            x, _ = dyn.step(x, a)
        return x

    assert torch.equal(rollout(0), rollout(0))
    assert not torch.equal(rollout(0), rollout(1))
    mean_dyn = LearnedDynamics(m, reward_fn=pendulum_reward, mode="mean")
    one, _ = mean_dyn.step(s, a)
    two, _ = mean_dyn.step(s, a)
    assert torch.equal(one, two)
    per_elite = torch.stack([m.predict(s, a, member_idx=torch.full((64,), int(e))).next_obs for e in m.elite_idx])
    assert torch.allclose(one, per_elite.mean(0), atol=1e-5)


def test_planner_runs_on_learned_dynamics():
    obs, action, next_obs, _ = pendulum_data(500, seed=0)
    model = make_model("ensemble", 3, 1, ensemble_size=3, seed=0, **SMALL)
    ModelTrainer(model, max_epochs=2, seed=0).fit(obs, action, next_obs)
    dyn = LearnedDynamics(model, reward_fn=pendulum_reward, mode="ts_inf", particles=4, seed=0)
    state = torch.tensor([-1.0, 0.0, 0.0])
    actions = torch.rand(6, 5, 1, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        returns = rollout_returns(dyn, state, actions)
    assert returns.shape == (6,) and torch.isfinite(returns).all()
    # The planner's rows are candidate-major (row = n * P + p); returns average the P particles.
    dyn.seed(0)
    with torch.no_grad():
        again = rollout_returns(dyn, state, actions)
    dyn.seed(0)
    rows, total = state.expand(24, 3), torch.zeros(24)
    for t in range(5):
        rows, r = dyn.step(rows, actions[:, t].repeat_interleave(4, 0))
        total += r
    assert torch.allclose(again, total.view(6, 4).mean(1), atol=1e-4)
    planner = MPPI(dyn, UNIT, horizon=5, num_samples=32, seed=0)
    act = planner.act(state.numpy())
    assert act.shape == (1,) and np.isfinite(act).all() and abs(act[0]) <= 1.0


def test_mean_mode_is_differentiable():
    m = differing_model()
    dyn = LearnedDynamics(m, reward_fn=pendulum_reward, mode="mean")
    a = torch.zeros(2, 1, requires_grad=True)
    nxt, r = dyn.step(torch.randn(2, 3), a)
    (nxt.sum() + r.sum()).backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


# -- diagnostics --------------------------------------------------------------------------------
def _pendulum_episodes(num: int, length: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    true = PendulumDynamics()
    eps = []
    for _ in range(num):
        th = (torch.rand(1, generator=g) * 2 - 1) * np.pi
        s = torch.stack([th.cos(), th.sin(), torch.zeros(1)], 1)
        acts = torch.rand(length, 1, generator=g) * 2 - 1
        traj = [s]
        for t in range(length):
            s, _ = true.step(s, acts[t:t + 1])
            traj.append(s)
        eps.append((torch.cat(traj).numpy(), acts.numpy()))
    return eps


def test_diagnostics_on_true_and_learned_models():
    eps = _pendulum_episodes(3, 12, seed=0)
    true = PendulumDynamics()
    err = k_step_error(true, eps, k=5)
    assert err.shape == (5,) and np.all(err < 1e-10)
    traj = predicted_trajectory(true, eps[0][0][0], eps[0][1])
    assert traj.shape == (13, 3) and np.allclose(traj, eps[0][0], atol=1e-5)
    obs, action, next_obs = (np.concatenate([e[0][:-1] for e in eps]), np.concatenate([e[1] for e in eps]),
                             np.concatenate([e[0][1:] for e in eps]))
    assert one_step_error(true, obs, action, next_obs)["mse"] < 1e-10
    model = make_model("mlp", 3, 1, **SMALL, seed=0)  # untrained: errors grow with the step
    err = k_step_error(model, eps, k=5)
    assert err[-1] > err[0] > 0
    assert k_step_error(model, eps, k=5, max_starts=4).shape == (5,)
    with pytest.raises(ValueError, match="k = 50"):
        k_step_error(model, eps, k=50)


def test_episodes_from_buffer_and_arrays():
    eps = _pendulum_episodes(3, 6, seed=1)
    buf = ReplayBuffer(3, 1, capacity=14)  # wraps around: the oldest episode is cut
    for e_obs, e_act in eps:
        for t in range(len(e_act)):
            buf.add(e_obs[t], e_act[t], 0.0, e_obs[t + 1], False, t == len(e_act) - 1)
    got = episodes_from_buffer(buf)
    assert [len(a) for _, a in got] == [2, 6, 6]
    assert np.array_equal(got[-1][0], eps[-1][0]) and np.array_equal(got[-1][1], eps[-1][1])
    data = buf.all()
    flags = np.zeros(len(buf), dtype=bool)  # no flags: gaps in next_obs -> obs still split episodes
    assert [len(a) for _, a in episodes_from_arrays(data["obs"], data["action"], data["next_obs"], flags)] == [2, 6, 6]
