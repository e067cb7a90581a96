"""Sampling planners (random shooting, CEM/iCEM, MPPI) and the shared Planner interface."""
import numpy as np
import pytest
import torch

from modelrl.envs import LinearDynamics, PendulumDynamics, make_env
from modelrl.planners import CEM, ILQR, LQR, MPPI, PLANNERS, RandomShooting, make_planner, rollout_returns
from modelrl.planners.sampling import colored_noise
from modelrl.types import NonFiniteError

UNIT = (np.array([-1.0]), np.array([1.0]))
SAMPLING = [RandomShooting, CEM, MPPI]
ALL = [RandomShooting, CEM, MPPI, ILQR]


def double_integrator_4d():
    """Two decoupled double integrators (dt = 0.1): the 4-state linear test system."""
    dt = 0.1
    a = np.array([[1.0, dt], [0.0, 1.0]])
    b = np.array([[0.5 * dt * dt], [dt]])
    A, B = np.kron(np.eye(2), a), np.kron(np.eye(2), b)
    return A, B, np.eye(4), 0.1 * np.eye(2)


@pytest.mark.parametrize("cls", ALL)
def test_plan_shape_bounds_and_warm_start(cls):
    planner = cls(PendulumDynamics(), UNIT, horizon=8, seed=0)
    state = np.array([-1.0, 0.0, 0.0], dtype=np.float32)
    plan = planner.plan(state)
    assert plan.shape == (8, 1)
    assert torch.all(plan <= 1.0) and torch.all(plan >= -1.0)
    action = planner.act(state)
    assert isinstance(action, np.ndarray) and action.shape == (1,)
    assert planner._warm is not None and torch.equal(planner._warm[:-1], planner._last_plan[1:])
    planner.reset()
    assert planner._warm is None


@pytest.mark.parametrize("cls", ALL)
def test_bad_input_errors(cls):
    dyn = PendulumDynamics()
    with pytest.raises(ValueError, match="horizon"):
        cls(dyn, UNIT, horizon=0)
    with pytest.raises(ValueError, match="inverted"):
        cls(dyn, (np.array([1.0]), np.array([-1.0])), horizon=5)
    planner = cls(dyn, UNIT, horizon=5, seed=0)
    with pytest.raises(ValueError, match="shape"):
        planner.act(np.zeros((1, 1, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="entries"):
        planner.act(np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        planner.act(np.array([1.0, np.nan, 0.0], dtype=np.float32))


def test_planner_specific_errors():
    dyn = PendulumDynamics()
    with pytest.raises(ValueError, match="num_elites"):
        CEM(dyn, UNIT, num_samples=10, num_elites=20)
    with pytest.raises(ValueError, match="temperature"):
        MPPI(dyn, UNIT, temperature=0.0)
    with pytest.raises(ValueError, match="covariance"):
        MPPI(dyn, UNIT, noise_sigma=np.ones((2, 2)))
    with pytest.raises(ValueError, match="finite"):
        RandomShooting(LinearDynamics(np.eye(1), np.eye(1), np.eye(1), np.eye(1)),
                       (np.array([-np.inf]), np.array([np.inf])))
    with pytest.raises(ValueError, match="Unknown planner 'mpi'.*mppi"):
        make_planner("mpi", dyn, UNIT)
    with pytest.raises(ValueError, match="LQR needs linear"):
        make_planner("lqr", dyn, UNIT)


def test_rollout_returns_matches_manual_loop_and_discount():
    dyn = PendulumDynamics()
    g = torch.Generator().manual_seed(0)
    actions = torch.rand((6, 5, 1), generator=g) * 2 - 1
    s0 = torch.tensor([0.3, 0.95, -0.5]) / torch.tensor([1.0, 1.0, 1.0])
    got = rollout_returns(dyn, s0, actions, gamma=0.9)
    for i in range(6):
        s, total = s0[None], 0.0
        for t in range(5):
            s, r = dyn.step(s, actions[i, t][None])
            total += 0.9**t * float(r)
        assert got[i].item() == pytest.approx(total, rel=1e-5)


def test_terminal_states_stop_the_return():
    class Ends:
        """Reward 1 per step; terminal once the first state entry exceeds 2."""

        def step(self, s, a):
            return s + 1.0, torch.ones(s.shape[0])

        def terminal(self, s):
            return s[:, 0] > 2.0

    total = rollout_returns(Ends(), torch.zeros(1), torch.zeros(3, 10, 1))
    assert torch.allclose(total, torch.full((3,), 3.0))


def test_mppi_weights_are_stable_for_huge_returns():
    class Huge:
        def step(self, s, a):
            return s, -1e8 * (a[:, 0] - 0.3) ** 2

    planner = MPPI(Huge(), UNIT, horizon=3, num_samples=256, temperature=1e-3, seed=0)
    plan = planner.plan(np.zeros(1, dtype=np.float32))
    assert torch.isfinite(plan).all()
    assert plan[0, 0].item() == pytest.approx(0.3, abs=0.1)


def test_mppi_full_covariance_and_elites_and_std_update():
    dyn = LinearDynamics(np.eye(2), np.eye(2), np.eye(2), 0.1 * np.eye(2))
    cov = np.array([[0.5, 0.2], [0.2, 0.3]])
    planner = MPPI(dyn, (-np.ones(2), np.ones(2)), horizon=4, noise_sigma=cov, num_elites=50,
                   iterations=3, update_std=True, momentum=0.1, seed=0)
    plan = planner.plan(np.array([1.0, -1.0], dtype=np.float32))
    # driving x to 0 needs u0 ~ -x0 (clipped): the plan's first action points the right way
    assert plan[0, 0] < -0.3 and plan[0, 1] > 0.3


def test_mppi_control_cost_pulls_the_mean_towards_zero():
    """Williams et al. 2017's lambda u^T Sigma^-1 eps term: with no reward signal at all, it alone
    weights the samples and favours perturbations against the current mean."""
    class Flat:
        def step(self, s, a):
            return s, torch.zeros(a.shape[0])

    means = {}
    for cc in (False, True):
        planner = MPPI(Flat(), UNIT, horizon=4, num_samples=2000, noise_sigma=0.1, temperature=0.05, seed=0,
                       control_cost=cc)
        planner._warm = torch.full((4, 1, 1), 0.3)  # [H, B, A]
        means[cc] = planner.plan(np.zeros(1, dtype=np.float32)).mean().item()
    assert means[False] == pytest.approx(0.3, abs=0.01)  # uniform weights: the mean stays
    # the weights exp(-mean . eps / sigma^2) tilt each Gaussian eps_t by -mean_t, so the new mean is near 0
    # (0.11 with 2000 samples: so steep a tilt leaves few effective samples)
    assert abs(means[True]) < 0.15


def test_inference_mode_option_gives_the_same_plan_as_an_ordinary_tensor():
    """``inference_mode=True`` plans identically; what it hands back still works with autograd, and a
    gradient-based planner on the same model afterwards still works (by default nothing the model
    caches during planning is an inference tensor)."""
    state = np.array([-1.0, 0.0, 0.0], dtype=np.float32)
    for cls in SAMPLING:
        plans = [cls(PendulumDynamics(), UNIT, horizon=5, seed=0, inference_mode=im).plan(state)
                 for im in (False, True)]
        assert torch.equal(plans[0], plans[1])
        assert not plans[1].is_inference()
        (plans[1].clone().requires_grad_() * 2).sum().backward()
    A, B, Q, R = double_integrator_4d()
    dyn = LinearDynamics(A, B, Q, R)  # caches its matrices as tensors on first use
    bounds = (-np.ones(2), np.ones(2))
    MPPI(dyn, bounds, horizon=5, seed=0).plan(np.ones(4, dtype=np.float32))
    assert ILQR(dyn, bounds, horizon=5, seed=0).plan(np.ones(4, dtype=np.float32)).shape == (5, 2)


def test_colored_noise_is_unit_variance_and_smoother_for_larger_beta():
    g = torch.Generator().manual_seed(0)
    for beta in (0.0, 1.0, 2.5):
        x = colored_noise((4000, 16, 2), beta, g)
        assert x.shape == (4000, 16, 2)
        assert x.var().item() == pytest.approx(1.0, rel=0.05)
    white = colored_noise((4000, 16, 1), 0.0, g)[..., 0]
    red = colored_noise((4000, 16, 1), 2.5, g)[..., 0]
    lag1 = lambda z: (z[:, 1:] * z[:, :-1]).mean().item()  # noqa: E731
    assert abs(lag1(white)) < 0.05 and lag1(red) > 0.5


def test_icem_options_run_and_respect_bounds():
    planner = CEM.icem(PendulumDynamics(), UNIT, horizon=10, seed=0)
    assert planner.noise_beta > 0 and planner.keep_elites > 0
    state = np.array([-1.0, 0.0, 0.0], dtype=np.float32)
    for _ in range(3):
        a = planner.act(state)
        assert -1.0 <= a[0] <= 1.0
    assert planner._kept is not None


def test_same_seed_same_plan():
    state = np.array([0.0, 1.0, 0.0], dtype=np.float32)
    for cls in SAMPLING:
        p1, p2 = cls(PendulumDynamics(), UNIT, horizon=6, seed=3), cls(PendulumDynamics(), UNIT, horizon=6, seed=3)
        assert torch.equal(p1.plan(state), p2.plan(state))


def closed_loop_cost(planner, A, B, Q, R, x0, steps=60):
    x, cost = x0.copy(), 0.0
    planner.reset()
    for _ in range(steps):
        u = np.asarray(planner.act(x.astype(np.float32)), dtype=np.float64)
        cost += x @ Q @ x + u @ R @ u
        x = A @ x + B @ u
    return cost


@pytest.mark.slow
def test_mppi_and_cem_close_to_lqr_on_linear_system():
    A, B, Q, R = double_integrator_4d()
    x0 = np.array([1.0, 0.0, -1.0, 0.5])
    lqr_cost = closed_loop_cost(LQR(A, B, Q, R), A, B, Q, R, x0)
    dyn = LinearDynamics(A, B, Q, R)
    bounds = (-10 * np.ones(2), 10 * np.ones(2))
    mppi = MPPI(dyn, bounds, horizon=30, noise_sigma=0.5, temperature=0.3, iterations=2, seed=0)
    cem = CEM(dyn, bounds, horizon=30, init_std=1.0, iterations=8, num_samples=1000, num_elites=100, seed=0)
    for planner in (mppi, cem):
        cost = closed_loop_cost(planner, A, B, Q, R, x0)
        assert cost <= 1.05 * lqr_cost, (type(planner).__name__, cost, lqr_cost)


def pendulum_mean_return(planner, episodes):
    env = make_env("Pendulum-v1", seed=0)
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=ep)
        planner.reset()
        total, done = 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(planner.act(obs))
            total += r
            done = term or trunc
        returns.append(total)
    return float(np.mean(returns))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mppi", "cem"])
def test_pendulum_swing_up_10_episodes(name):
    """The acceptance check: mean return >= -160 over 10 standard random resets (200 steps)."""
    from modelrl.runner.plan import resolved_planner_kwargs

    torch.set_num_threads(1)
    kwargs = resolved_planner_kwargs(name, "Pendulum-v1", {})
    planner = make_planner(name, PendulumDynamics(), UNIT, seed=0, **kwargs)
    assert pendulum_mean_return(planner, 10) >= -160.0


def test_registry_names():
    assert set(PLANNERS) == {"random_shooting", "cem", "icem", "mppi", "ilqr", "lqr"}


def test_rollout_returns_averages_particles_candidate_major():
    class Particles:
        """Row r of the batch earns reward r % P each step: the particle index."""

        particles = 3

        def step(self, s, a):
            rows = torch.arange(s.shape[0], dtype=s.dtype)
            return s, rows % self.particles + a[:, 0]

    actions = torch.zeros((4, 2, 1))
    actions[2] = 1.0  # candidate 2 adds 1 per step on every one of its particles
    got = rollout_returns(Particles(), torch.zeros(1), actions)
    assert torch.allclose(got, torch.tensor([2.0, 2.0, 4.0, 2.0]))  # mean over p of 2 * p = 2


@pytest.mark.parametrize("factory", [MPPI, CEM, CEM.icem, RandomShooting])
def test_state_dict_resumes_identical_plans(factory):
    state = np.array([-1.0, 0.1, 0.0], dtype=np.float32)
    a = factory(PendulumDynamics(), UNIT, horizon=6, seed=1)
    a.act(state)
    saved = a.state_dict()
    expected = [a.act(state) for _ in range(3)]
    b = factory(PendulumDynamics(), UNIT, horizon=6, seed=99)
    b.load_state_dict(saved)
    assert np.array_equal(np.stack([b.act(state) for _ in range(3)]), np.stack(expected))


def test_unseeded_planner_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    MPPI(PendulumDynamics(), UNIT, horizon=3)  # no seed: fresh entropy, not torch.seed()
    assert torch.equal(torch.rand(3), expected)


def test_planner_terminal_value_adds_discounted_value_of_the_last_state():
    """``terminal_value`` reaches every sampled return: gamma^H V(s_H) on top of the rewards, so a planner
    whose rewards are flat follows the value alone."""
    class Drift:  # s' = s + a, no reward
        def step(self, s, a):
            return s + a, torch.zeros(a.shape[0])

    value = lambda s: -(s[:, 0] - 2.0) ** 2  # noqa: E731  (the best final state is 2)
    planner = MPPI(Drift(), UNIT, horizon=4, num_samples=2000, noise_sigma=0.5, temperature=0.05, gamma=0.9,
                   terminal_value=value, seed=0)
    states = torch.zeros(1, 1)
    actions = torch.full((4, 1, 3, 1), 0.5)  # [H, B, N, A]: three identical candidates reaching s_H = 2
    assert torch.allclose(planner.returns(states, actions), torch.zeros(1, 3))
    actions[:, :, 1] = 0.0  # s_H = 0: V = -4, discounted by 0.9^4
    assert planner.returns(states, actions)[0, 1].item() == pytest.approx(-4 * 0.9**4, rel=1e-6)
    plan = planner.plan(np.zeros(1, dtype=np.float32))
    assert plan.sum().item() == pytest.approx(2.0, abs=0.3)  # the plan drives s to about 2


def test_sampling_core_refits_towards_the_optimum_of_each_problem_and_scores_extra_candidates():
    """The core alone: two problems with different optima (a quadratic objective), softmax top-k with
    momentum; each mean moves to its own optimum, the std stays within [min_std, max_std], and an
    extra candidate placed at the optimum is among the elites."""
    from modelrl.planners.sampling import SamplingOptimizer, SamplingSettings, warm_start

    target = torch.tensor([0.5, -0.3]).view(1, 2, 1)  # [H=1 broadcast, B=2, A=1]

    def objective(c, mean):  # [H, B, N, A] -> [B, N]
        return -((c - target.unsqueeze(2)) ** 2).sum((0, 3))

    s = SamplingSettings(num_samples=200, iterations=6, num_elites=20, temperature=0.1, momentum=0.1,
                         min_std=0.05, max_std=0.5, noise_order="time")
    core = SamplingOptimizer(s, torch.tensor([-1.0]), torch.tensor([1.0]))
    mean, std = torch.zeros(4, 2, 1), torch.full((4, 2, 1), 0.5)
    extra = target.unsqueeze(2).expand(4, 2, 1, 1).clone()  # [H, B, 1, A]
    out = core.optimize(objective, mean, std, torch.Generator().manual_seed(0), extra=extra)
    assert torch.allclose(out.mean, target.expand(4, 2, 1), atol=0.05)
    assert (out.std >= 0.05 - 1e-6).all() and (out.std <= 0.5 + 1e-6).all()
    assert out.elites.shape == (4, 2, 20, 1) and torch.allclose(out.weights.sum(1), torch.ones(2))
    assert torch.allclose(out.best, target.expand(4, 2, 1))  # the extra candidate is the best one seen
    with pytest.raises(ValueError, match="momentum"):
        SamplingSettings(num_samples=10, momentum=1.0)
    shifted = warm_start(torch.arange(3.0).view(3, 1, 1), 3, torch.zeros(1, 1))
    assert shifted.flatten().tolist() == [1.0, 2.0, 0.0]


@pytest.mark.parametrize("cls", SAMPLING)
def test_non_finite_returns_rank_as_the_worst(cls):
    """A diverging model: returns are NaN (or inf) for actions above 0.2. torch.topk ranks NaN first; the core
    scores non-finite returns as the worst, so the plan stays finite and below 0.2. When every candidate's return
    is NaN or inf there is nothing to plan with: a NonFiniteError names the model and the first step."""
    class Diverging:
        def __init__(self, everywhere=False):
            self.everywhere = everywhere

        def step(self, s, a):
            r = -((a[:, 0] - 0.2) ** 2)
            bad = torch.ones_like(r, dtype=torch.bool) if self.everywhere else a[:, 0] > 0.2
            r = torch.where(bad, torch.where(a[:, 0] > 0.6, float("inf"), float("nan")), r)
            return s, r

    plan = cls(Diverging(), UNIT, horizon=3, num_samples=128, seed=0).plan(np.zeros(1, dtype=np.float32))
    assert torch.isfinite(plan).all() and plan[0, 0].item() <= 0.2 + 1e-6
    with pytest.raises(NonFiniteError, match=rf"{cls.__name__}: Diverging.step returned a non-finite reward \(NaN or "
                                             r"inf\) for every one of the \d+ candidate action sequences at the first "
                                             r"step, from state \[0.0\]"):
        cls(Diverging(everywhere=True), UNIT, horizon=3, num_samples=64, seed=0).plan(np.zeros(1, dtype=np.float32))


def test_truncated_normal_candidates_stay_inside_the_bounds_without_piling_on_them():
    """PETS's CEM: truncnorm(-2, 2) scaled by a std shrunk to a quarter of the room to each bound. Clamping a
    Gaussian instead puts every candidate beyond a bound exactly on it."""
    from modelrl.planners.sampling import SamplingOptimizer, SamplingSettings, truncated_unit_normal

    z = truncated_unit_normal((200_000,), torch.Generator().manual_seed(0))
    assert z.abs().max() <= 2.0 and abs(z.mean()) < 0.01 and abs(z.std() - 0.8796) < 0.01  # truncnorm(-2, 2) std
    low, high = torch.tensor([-1.0]), torch.tensor([1.0])
    mean, std = torch.full((5, 1, 1), 0.8), torch.full((5, 1, 1), 0.5)  # near the upper bound
    for truncated in (False, True):
        core = SamplingOptimizer(SamplingSettings(num_samples=4000, truncated=truncated), low, high)
        c = core.sample(mean, std, 4000, torch.Generator().manual_seed(1))
        on_bound = (c == 1.0).float().mean().item()
        if truncated:
            assert on_bound == 0.0 and c.max() <= 1.0 and c.min() >= 0.8 - 2 * 0.1 - 1e-6  # std shrunk to 0.1
        else:
            assert on_bound > 0.3  # P(N(0.8, 0.5) > 1) = 0.34: all of it on the bound
    with pytest.raises(ValueError, match="white Gaussian"):
        SamplingSettings(num_samples=4, truncated=True, noise_beta=2.0)


class RewardColumn:
    """reward [B, 1] instead of [B]"""

    def step(self, s, a):
        return s, -(a**2)


class NumpyModel:
    def step(self, s, a):
        return s.numpy(), -(a[:, 0] ** 2).numpy()


class WideState:
    def step(self, s, a):
        return torch.cat([s, s], dim=1), -(a[:, 0] ** 2)


class OnlyState:
    def step(self, s, a):
        return s


@pytest.mark.parametrize("cls", ALL)
def test_model_output_checked_against_the_dynamics_contract(cls):
    """What a model returns is checked on the first step of every rollout (sampling planners and iLQR): one line
    naming the model class, the shapes it was given, what it returned and what was expected."""
    rows = r"\d+" if cls is not ILQR else "1"
    planner = lambda model: cls(model, UNIT, horizon=4, seed=0)  # noqa: E731
    state = np.zeros(1, dtype=np.float32)
    with pytest.raises(ValueError, match=rf"^RewardColumn.step\(state\[{rows}, 1\], action\[{rows}, 1\]\) returned a "
                                         rf"reward of shape \[{rows}, 1\]; expected \[{rows}\] \(one reward per row: "
                                         r"reward.squeeze\(-1\)"):
        planner(RewardColumn()).plan(state)
    with pytest.raises(TypeError, match=rf"NumpyModel.step.* returned a next_state of type numpy.ndarray of shape "
                                        rf"\[{rows}, 1\]; expected a torch.Tensor \[{rows}, 1\]"):
        planner(NumpyModel()).plan(state)
    with pytest.raises(ValueError, match=rf"WideState.step.* returned a next_state of shape \[{rows}, 2\]; expected "
                                         rf"\[{rows}, 1\] \(the shape of the state it was given\)"):
        planner(WideState()).plan(state)
    with pytest.raises(TypeError, match=r"OnlyState.step.* returned torch.Tensor of shape .*; expected a pair"):
        planner(OnlyState()).plan(state)


def test_ilqr_non_finite_initial_rollout_names_the_model_and_the_step():
    class BlowsUp:
        """x' = 1e30 x + 1 in float32: finite after the first step, inf (its reward -inf) at the second."""

        def step(self, s, a):
            return s * 1e30 + 1.0, -(s[:, 0] ** 2) - (a[:, 0] ** 2)

    with pytest.raises(NonFiniteError, match=r"ILQR: the rollout of the action sequence through BlowsUp from state "
                                             r"\[1.0\] went NaN or inf at step 2 of 5"):
        ILQR(BlowsUp(), UNIT, horizon=5, seed=0).plan(np.ones(1, dtype=np.float32))
