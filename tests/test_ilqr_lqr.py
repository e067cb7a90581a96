"""LQR against scipy's DARE, iLQR against LQR, box-DDP against a QP solver, pendulum swing-up."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import torch

from modelrl.envs.true_dynamics import LinearDynamics, PendulumDynamics
from modelrl.planners.ilqr import ILQR, box_qp
from modelrl.planners.lqr import LQR, dare, riccati

F64 = torch.float64
UNBOUNDED2 = (np.full(2, -np.inf), np.full(2, np.inf))


def random_system(seed: int, n: int = 4, m: int = 2, radius: float = 1.2):
    """A random (generically stabilisable) system with A scaled to spectral radius ``radius``."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n))
    A *= radius / np.abs(np.linalg.eigvals(A)).max()
    B = rng.normal(size=(n, m))
    M, N = rng.normal(size=(n, n)), rng.normal(size=(m, m))
    Q = M @ M.T + 0.1 * np.eye(n)
    R = N @ N.T + 0.1 * np.eye(m)
    return A, B, Q, R, rng.normal(size=n)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


# -- LQR -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_finite_riccati_converges_to_dare(seed):
    A, B, Q, R, _ = random_system(seed)
    P_dare = scipy.linalg.solve_discrete_are(A, B, Q, R)
    K_dare = np.linalg.solve(R + B.T @ P_dare @ B, B.T @ P_dare @ A)
    gains, costs = riccati(A, B, Q, R, horizon=3000)
    assert len(gains) == 3000 and len(costs) == 3001
    assert np.all(costs[-1] == 0)  # P_H = Qf = 0 by default
    assert rel_err(costs[0], P_dare) < 1e-8
    assert rel_err(gains[0], K_dare) < 1e-8
    assert all(K.dtype == np.float64 for K in gains)


@pytest.mark.parametrize("seed", range(5))
def test_infinite_lqr_closed_loop_cost_equals_x0_P_x0(seed):
    A, B, Q, R, x0 = random_system(seed)
    lqr = LQR(A, B, Q, R)
    K, P = lqr.gains, lqr.P
    assert rel_err(P, scipy.linalg.solve_discrete_are(A, B, Q, R)) < 1e-10
    x, total = x0.copy(), 0.0
    for _ in range(20000):
        u = -K @ x
        total += x @ Q @ x + u @ R @ u
        x = A @ x + B @ u
        if x @ x < 1e-40:
            break
    assert x @ x < 1e-30
    expected = x0 @ P @ x0
    assert abs(total - expected) / expected < 1e-8
    assert abs(lqr.cost(x0) - expected) / expected < 1e-12
    np.testing.assert_allclose(lqr.act(x0), -K @ x0, rtol=1e-12, atol=1e-14)
    plan = lqr.plan(x0).numpy()
    assert plan.shape == (50, 2)
    np.testing.assert_allclose(plan[0], -K @ x0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(plan[1], -K @ ((A - B @ K) @ x0), rtol=1e-10, atol=1e-14)


def test_finite_lqr_plan_is_time_varying_feedback_and_act_is_first_gain():
    A, B, Q, R, x0 = random_system(7)
    Qf = np.eye(4)
    lqr = LQR(A, B, Q, R, horizon=10, Qf=Qf)
    gains, costs = riccati(A, B, Q, R, 10, Qf)
    plan = lqr.plan(x0).numpy()
    x, total = x0.copy(), 0.0
    for t in range(10):
        u = -gains[t] @ x
        np.testing.assert_allclose(plan[t], u, rtol=1e-10, atol=1e-12)
        total += x @ Q @ x + u @ R @ u
        x = A @ x + B @ u
    total += x @ Qf @ x
    assert abs(total - x0 @ costs[0] @ x0) / total < 1e-10
    assert abs(lqr.cost(x0) - total) / total < 1e-10
    np.testing.assert_allclose(lqr.act(x0), plan[0], rtol=1e-12)
    np.testing.assert_allclose(lqr.act(x0), plan[0], rtol=1e-12)  # receding horizon: same u_0 again


def test_lqr_clamps_to_action_bounds():
    A, B, Q, R, x0 = random_system(3)
    lqr = LQR(A, B, Q, R, action_space=(-0.1 * np.ones(2), 0.1 * np.ones(2)))
    u = lqr.act(10 * x0)
    assert np.all(np.abs(u) <= 0.1) and np.any(np.abs(u) == 0.1)
    assert torch.all(lqr.plan(10 * x0).abs() <= 0.1)


def test_lqr_errors():
    A, B, Q, R, x0 = random_system(0)
    with pytest.raises(ValueError, match="A\\[n,n\\]"):
        LQR(A, B[:3], Q, R)
    with pytest.raises(ValueError, match="positive definite"):
        LQR(A, B, Q, -R)
    with pytest.raises(ValueError, match="stabilis"):
        LQR(2 * np.eye(2), np.array([[1.0], [0.0]]), np.eye(2), np.eye(1))  # 2nd mode unstable, unreachable
    with pytest.raises(ValueError, match="stabilis"):
        dare(2 * np.eye(2), np.zeros((2, 1)), np.eye(2), np.eye(1))
    with pytest.raises(ValueError, match="horizon"):
        LQR(A, B, Q, R, horizon=0)
    with pytest.raises(ValueError, match="horizon"):
        riccati(A, B, Q, R, horizon=0)
    with pytest.raises(ValueError, match="dimensions"):
        LQR(A, B, Q, R, action_space=(-1.0, 1.0))
    with pytest.raises(ValueError, match="inverted"):
        LQR(A, B, Q, R, action_space=(np.ones(2), -np.ones(2)))
    lqr = LQR(A, B, Q, R)
    with pytest.raises(ValueError, match="shape"):
        lqr.act(x0[None, None])
    with pytest.raises(ValueError, match="one state"):
        lqr.cost(x0[None])
    assert np.allclose(lqr.act(np.stack([x0, 2 * x0])), np.stack([lqr.act(x0), lqr.act(2 * x0)]), atol=1e-6)
    with pytest.raises(ValueError, match="entries"):
        lqr.act(x0[:3])
    with pytest.raises(ValueError, match="NaN"):
        lqr.act(np.array([0.0, np.nan, 0.0, 0.0]))
    with pytest.raises(ValueError, match="NaN"):
        lqr.plan(np.array([0.0, np.nan, 0.0, 0.0]))


# -- iLQR on linear-quadratic problems ---------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
def test_ilqr_matches_finite_horizon_lqr(seed):
    A, B, Q, R, x0 = random_system(seed)
    expected = LQR(A, B, Q, R, horizon=20).plan(x0).numpy()
    # Without regularisation one Newton step solves a linear-quadratic problem exactly.
    one_step = ILQR(LinearDynamics(A, B, Q, R), UNBOUNDED2, horizon=20, iterations=1, mu_init=0.0, dtype=F64)
    assert np.abs(one_step.plan(x0).numpy() - expected).max() < 1e-9
    # With the default regularisation schedule it converges in a few iterations.
    planner = ILQR(LinearDynamics(A, B, Q, R), UNBOUNDED2, horizon=20, iterations=50, tol=1e-12, dtype=F64)
    actions = planner.plan(x0)
    assert actions.dtype == F64 and actions.shape == (20, 2)
    assert np.abs(actions.numpy() - expected).max() < 1e-6
    np.testing.assert_allclose(planner.act(x0), expected[0], atol=1e-6)


def test_ilqr_float32_close_to_lqr():
    A, B, Q, R, x0 = random_system(1)
    expected = LQR(A, B, Q, R, horizon=20).plan(x0).numpy()
    actions = ILQR(LinearDynamics(A, B, Q, R), UNBOUNDED2, horizon=20, iterations=20).plan(x0)
    assert actions.dtype == torch.float32
    assert np.abs(actions.numpy() - expected).max() < 1e-3 * max(1.0, np.abs(expected).max())


def test_ilqr_discount_matches_rescaled_lqr():
    # sum_t g^t (x'Qx + u'Ru) with x' = Ax + Bu is plain LQR in y_t = g^(t/2) x_t, v_t = g^(t/2) u_t
    # with matrices sqrt(g) A, sqrt(g) B.
    A, B, Q, R, x0 = random_system(2)
    g, H = 0.9, 15
    v = LQR(math.sqrt(g) * A, math.sqrt(g) * B, Q, R, horizon=H).plan(x0).numpy()
    expected = v / g ** (np.arange(H)[:, None] / 2)
    planner = ILQR(
        LinearDynamics(A, B, Q, R), UNBOUNDED2, horizon=H, iterations=1, mu_init=0.0, gamma=g, dtype=F64
    )
    assert np.abs(planner.plan(x0).numpy() - expected).max() < 1e-8


def _batch_lq_qp(A, B, Q, R, x0, H):
    """The finite-horizon LQ cost as a QP in the stacked actions: 0.5 u'Gu + c'u + const."""
    n, m = B.shape
    Phi = np.zeros((H, n, n))
    Gam = np.zeros((H, n, H * m))
    x_map, u_map = np.eye(n), np.zeros((n, H * m))
    for t in range(H):
        Phi[t], Gam[t] = x_map, u_map
        u_map = A @ u_map
        u_map[:, t * m:(t + 1) * m] += B
        x_map = A @ x_map
    G = 2 * np.kron(np.eye(H), R) + 2 * sum(Gam[t].T @ Q @ Gam[t] for t in range(H))
    c = 2 * sum(Gam[t].T @ Q @ Phi[t] @ x0 for t in range(H))
    return G, c


def test_box_ddp_on_bounded_lq_matches_qp_solution():
    A, B, Q, R, x0 = random_system(4, radius=0.95)
    H, bound = 12, 0.3
    x0 = 3 * x0
    G, c = _batch_lq_qp(A, B, Q, R, x0, H)
    ref = scipy.optimize.minimize(
        lambda u: 0.5 * u @ G @ u + c @ u, np.zeros(H * 2), jac=lambda u: G @ u + c,
        bounds=[(-bound, bound)] * (H * 2), method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000},
    )
    u_ref = ref.x.reshape(H, 2)
    assert np.any(np.isclose(np.abs(u_ref), bound))  # the bounds are active
    planner = ILQR(LinearDynamics(A, B, Q, R), (-bound * np.ones(2), bound * np.ones(2)), horizon=H,
                   iterations=100, tol=1e-14, dtype=F64)
    u = planner.plan(x0).numpy()
    assert np.all(np.abs(u) <= bound)
    f = lambda v: 0.5 * v.ravel() @ G @ v.ravel() + c @ v.ravel()  # noqa: E731
    assert f(u) <= f(u_ref) + 1e-7 * abs(f(u_ref))
    assert np.abs(u - u_ref).max() < 1e-4


@pytest.mark.parametrize("seed", range(20))
def test_box_qp_satisfies_kkt(seed):
    rng = np.random.default_rng(seed)
    n = 4
    M = rng.normal(size=(n, n))
    Hm = M @ M.T + 0.1 * np.eye(n)
    g = 3 * rng.normal(size=n)
    lower, upper = -rng.uniform(0.1, 1, n), rng.uniform(0.1, 1, n)
    x, free, chol = box_qp(Hm, g, lower, upper)
    assert chol is not None
    grad = Hm @ x + g
    assert np.all(x >= lower) and np.all(x <= upper)
    assert np.abs(grad[free]).max(initial=0.0) < 1e-6
    at_low, at_high = np.isclose(x, lower), np.isclose(x, upper)
    assert np.all(grad[~free & at_low] >= -1e-9) and np.all(grad[~free & at_high] <= 1e-9)
    assert np.all(at_low | at_high | free)
    np.testing.assert_allclose(chol @ chol.T, Hm[np.ix_(free, free)], atol=1e-12)


def test_box_qp_reports_nonconvex_free_block():
    x, free, chol = box_qp(np.array([[1.0, 0.0], [0.0, -1.0]]), np.zeros(2), -np.ones(2), np.ones(2))
    assert chol is None


# -- derivatives ----------------------------------------------------------------------------
def test_vmap_and_autograd_derivatives_agree():
    planner = ILQR(PendulumDynamics(), (-1.0, 1.0), horizon=12, dtype=F64)
    rng = np.random.default_rng(0)
    th = torch.as_tensor(rng.uniform(-3, 3, 12), dtype=F64)
    xs = torch.stack([torch.cos(th), torch.sin(th), torch.as_tensor(rng.uniform(-7, 7, 12), dtype=F64)], -1)
    us = torch.as_tensor(rng.uniform(-0.9, 0.9, (12, 1)), dtype=F64)
    planner._use_vmap = False
    ref = planner._derivatives(xs, us)
    planner._use_vmap = True
    for a, b in zip(planner._derivatives(xs, us), ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    planner._use_vmap, planner._batched_grads = False, False  # one backward pass per output dimension
    for a, b in zip(planner._derivatives(xs, us), ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    # f_u of the pendulum: d thdot' / du = 3 / (m l^2) * 2 * dt = 0.3 where thdot is not clipped
    fu = ref[0][:, 2, 3]
    assert np.allclose(fu[np.abs(xs[:, 2].numpy()) < 6.0], 0.3)


class _NotVmappable(LinearDynamics):
    """Linear dynamics with data-dependent Python control flow, which vmap cannot trace."""

    def step(self, state, action):
        if bool((state.abs() > 1e6).any()):
            raise RuntimeError("diverged")
        return super().step(state, action)


def test_vmap_failure_falls_back_to_autograd():
    A, B, Q, R, x0 = random_system(5)
    expected = LQR(A, B, Q, R, horizon=8).plan(x0).numpy()
    planner = ILQR(_NotVmappable(A, B, Q, R), UNBOUNDED2, horizon=8, iterations=1, mu_init=0.0,
                   derivatives="vmap", dtype=F64)
    with pytest.warns(RuntimeWarning, match="vmap"):
        actions = planner.plan(x0)
    assert np.abs(actions.numpy() - expected).max() < 1e-9


# -- bad input ------------------------------------------------------------------------------
def test_ilqr_bad_input():
    dyn = PendulumDynamics()
    with pytest.raises(ValueError, match="horizon"):
        ILQR(dyn, (-1.0, 1.0), horizon=0)
    with pytest.raises(ValueError, match="inverted"):
        ILQR(dyn, (1.0, -1.0), horizon=5)
    with pytest.raises(ValueError, match="iterations"):
        ILQR(dyn, (-1.0, 1.0), horizon=5, iterations=0)
    with pytest.raises(ValueError, match="derivatives"):
        ILQR(dyn, (-1.0, 1.0), horizon=5, derivatives="finite-differences")
    planner = ILQR(dyn, (-1.0, 1.0), horizon=5)
    with pytest.raises(ValueError, match="shape"):
        planner.act(np.zeros((1, 1, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="entries"):
        planner.act(np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        planner.act(np.array([1.0, np.nan, 0.0]))
    with pytest.raises(ValueError, match="NaN"):
        planner.plan(np.array([np.inf, 0.0, 0.0]))


# -- the pendulum -----------------------------------------------------------------------------
def test_ilqr_swings_pendulum_up_open_loop():
    dyn, horizon = PendulumDynamics(), 90
    planner = ILQR(dyn, (-1.0, 1.0), horizon=horizon, iterations=200, dtype=F64)
    down = torch.tensor([-1.0, 0.0, 0.0], dtype=F64)  # theta = pi, thdot = 0
    actions = planner.plan(down)
    assert actions.shape == (horizon, 1)
    assert torch.all(actions.abs() <= 1.0)
    x, ret, zero_ret = down[None], 0.0, 0.0
    z = down[None]
    for t in range(horizon):
        x, r = dyn.step(x, actions[t][None])
        z, r0 = dyn.step(z, torch.zeros(1, 1, dtype=F64))
        ret, zero_ret = ret + float(r), zero_ret + float(r0)
    theta = math.atan2(float(x[0, 1]), float(x[0, 0]))
    assert abs(theta) < 0.2
    assert abs(zero_ret - (-horizon * math.pi**2)) < 1e-6  # it just hangs there
    assert ret > 0.5 * zero_ret
    assert abs(-ret - planner.last_info["cost"]) < 1e-8


def _pendulum_episodes(planner: ILQR, seeds) -> list[float]:
    """Closed-loop returns on gymnasium's Pendulum-v1 (torque = 2 x normalised action), 200 steps each."""
    gym = pytest.importorskip("gymnasium")
    env = gym.make("Pendulum-v1")
    returns = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        planner.reset()
        total = 0.0
        for _ in range(200):
            action = planner.act(obs)
            assert action.shape == (1,) and abs(float(action[0])) <= 1.0
            obs, reward, terminated, truncated, _ = env.step(2.0 * action.astype(np.float32))
            total += float(reward)
        returns.append(total)
    env.close()
    return returns


def test_ilqr_closed_loop_pendulum():
    planner = ILQR(PendulumDynamics(), (-1.0, 1.0), horizon=20, iterations=3, seed=0)
    returns = _pendulum_episodes(planner, seeds=[0, 5])
    assert min(returns) >= -200, returns


@pytest.mark.slow
def test_ilqr_closed_loop_pendulum_five_episodes():
    planner = ILQR(PendulumDynamics(), (-1.0, 1.0), horizon=20, iterations=3, seed=0)
    returns = _pendulum_episodes(planner, seeds=range(5))
    assert np.mean(returns) >= -160, returns
