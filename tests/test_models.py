"""Learned dynamics: ensemble layers, ensemble model, normaliser, trainer, LearnedDynamics, diagnostics."""
import zlib
from typing import Any

import numpy as np
import pytest
import torch

from modelrl.data.buffer import ReplayBuffer
from modelrl.envs import PendulumDynamics
from modelrl.models import (
    EnsembleLayerNorm,
    EnsembleLinear,
    EnsembleMLP,
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
SMALL: dict[str, Any] = dict(hidden_size=32, num_layers=2)  # small networks keep the unit tests fast


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


# -- ensemble layers ----------------------------------------------------------------------------
def plain_member(net: EnsembleMLP, m: int) -> torch.nn.Sequential:
    """Member ``m`` of ``net`` as a plain nn.Linear / nn.LayerNorm stack with its weights."""
    acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "elu": torch.nn.ELU, "mish": torch.nn.Mish}
    mods: list[torch.nn.Module] = []
    for i, layer in enumerate(net.layers):
        lin = torch.nn.Linear(layer.in_features, layer.out_features)
        lin.weight.data.copy_(layer.weight[m].T)
        lin.bias.data.copy_(layer.bias[m, 0])
        mods.append(lin)
        if i < len(net.activations):
            if str(i) in net.norms:
                ln, norm = torch.nn.LayerNorm(layer.out_features), net.norms[str(i)]
                assert isinstance(norm, EnsembleLayerNorm)
                ln.weight.data.copy_(norm.weight[m, 0])
                ln.bias.data.copy_(norm.bias[m, 0])
                mods.append(ln)
            mods.append(acts[net.activations[i]]())
    return torch.nn.Sequential(*mods)


def test_ensemble_linear_shapes_init_and_member_selection():
    layer = EnsembleLinear(3, 4, ensemble_size=5)
    assert layer.weight.shape == (5, 3, 4) and layer.bias.shape == (5, 1, 4)
    assert not layer.weight.any() and not layer.bias.any()  # zero until reset
    layer.reset_parameters(torch.Generator().manual_seed(0))  # nn.Linear's default: U(+-1/sqrt(in))
    bound = 1 / np.sqrt(3)
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound and layer.weight.std() > 0.2
    again = EnsembleLinear(3, 4, ensemble_size=5)
    again.reset_parameters(torch.Generator().manual_seed(0))
    assert torch.equal(again.weight, layer.weight)
    x, own = torch.randn(7, 3), torch.randn(5, 7, 3)
    assert layer(x).shape == layer(own).shape == (5, 7, 4)
    for e in range(5):  # shared input: every member reads x; own rows: member e reads own[e]
        assert torch.allclose(layer(x)[e], x @ layer.weight[e] + layer.bias[e], atol=1e-6)
        assert torch.allclose(layer(own)[e], own[e] @ layer.weight[e] + layer.bias[e], atol=1e-6)
    pick = torch.tensor([4, 1])
    assert torch.equal(layer(x, pick), layer(x)[pick]) and layer(own[:2], pick).shape == (2, 7, 4)
    fused = EnsembleLinear(3, 4, ensemble_size=5, bias_in_matmul=False)
    fused.load_state_dict(layer.state_dict())
    assert torch.allclose(fused(own), layer(own), atol=1e-6)  # bmm + bias: the same sums


@pytest.mark.parametrize("bias_in_matmul,norm_addcmul", [(True, True), (False, False)])
def test_ensemble_mlp_members_are_plain_mlps(bias_in_matmul, norm_addcmul):
    net = EnsembleMLP([4, 16, 8, 3], ensemble_size=3, activation=["tanh", "relu"], layernorm=[True, False],
                      bias_in_matmul=bias_in_matmul, norm_addcmul=norm_addcmul)
    net.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():  # LayerNorm affines off the identity, so they are checked too
        for p in net.norms.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    assert [n for n, _ in net.named_parameters()] == [
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "layers.2.weight", "layers.2.bias",
        "norms.0.weight", "norms.0.bias"]
    x, own = torch.randn(5, 4), torch.randn(3, 5, 4)
    shared, separate = net(x), net(own)
    assert shared.shape == separate.shape == (3, 5, 3)
    assert net.hidden_features(x).shape == (3, 5, 8)
    for m in range(3):
        plain = plain_member(net, m)
        assert torch.allclose(shared[m], plain(x), atol=1e-5)
        assert torch.allclose(separate[m], plain(own[m]), atol=1e-5)
    pick = torch.tensor([2, 0])
    assert torch.allclose(net(own[:2], pick), torch.stack([plain_member(net, 2)(own[0]), plain_member(net, 0)(own[1])]),
                          atol=1e-5)
    # params: detached copies run the same function, and no gradient reaches the parameters through them
    out = net(x, params=net.detached_params())
    assert torch.equal(out, shared) and not out.requires_grad
    with pytest.raises(ValueError, match="one per hidden layer"):
        EnsembleMLP([4, 16, 3], ensemble_size=2, activation=["relu", "relu"])
    with pytest.raises(ValueError, match="unknown activation"):
        EnsembleMLP([4, 16, 3], ensemble_size=2, activation="gelu")


def test_ensemble_mlp_dropout_only_in_training():
    net = EnsembleMLP([4, 64, 1], ensemble_size=2, dropout=0.5)
    net.reset_parameters(torch.Generator().manual_seed(0))
    x = torch.randn(32, 4)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    torch.manual_seed(0)
    assert not torch.equal(net(x), net(x))


def test_ensemble_mlp_weight_decay_groups():
    """Weight decay on the weights only: one value for all, or one per layer (MBPO); biases and LayerNorm
    affines in the last group, undecayed; every parameter in exactly one group."""
    net = EnsembleMLP([4, 8, 8, 2], ensemble_size=3, layernorm=True)
    groups = net.parameter_groups(1e-4)
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0]
    assert groups[0]["params"] == net.weights and all(p.ndim == 3 and p.shape[1] > 1 for p in groups[0]["params"])
    groups = net.parameter_groups([1e-5, 2e-5, 3e-5])
    assert [g["weight_decay"] for g in groups] == [1e-5, 2e-5, 3e-5, 0.0]
    assert [g["params"] for g in groups[:3]] == [[w] for w in net.weights]
    assert groups[-1]["params"] == net.biases + list(net.norms.parameters())
    assert sorted(map(id, (p for g in groups for p in g["params"]))) == sorted(map(id, net.parameters()))
    with pytest.raises(ValueError, match="one per layer"):
        net.parameter_groups([1e-5, 2e-5])
    model = EnsembleModel(3, 1, ensemble_size=2, seed=0, **SMALL)  # + the learned log-variance bounds, undecayed
    groups = model.parameter_groups([1e-5, 2e-5, 3e-5])
    assert groups[-1]["params"] == model.net.biases + [model.max_logvar, model.min_logvar]
    torch.optim.Adam(groups)  # a valid optimiser spec


def _legacy_fixture(names: dict) -> dict:
    """Deterministic, irregular values for a state_dict ``{name: shape}`` (the same in every process)."""
    return {k: torch.sin(torch.arange(int(np.prod(s))) * 1.7 + zlib.crc32(k.encode()) % 100).reshape(s)
            for k, s in names.items()}


# Parameter names and shapes as the code before EnsembleMLP wrote them, and what that code computed from
# ``_legacy_fixture`` of them on ``x = linspace(-1, 1, 9).reshape(3, 3)`` (recorded from that code).
LEGACY_TWINQ = {"weights.0": (2, 3, 4), "weights.1": (2, 4, 1), "biases.0": (2, 1, 4), "biases.1": (2, 1, 1),
                "ln_weight.0": (2, 1, 4), "ln_bias.0": (2, 1, 4)}
LEGACY_TWINQ_OUT = [[1.1827495098114014, 1.1944000720977783, 0.6581900119781494],
                    [0.8687421679496765, 0.8530873656272888, 0.723838210105896]]
LEGACY_HEADS = {"w1": (5, 4), "b1": (1, 4), "w2": (4, 4), "b2": (1, 4), "ln1_w": (1, 4), "ln1_b": (1, 4)}
LEGACY_TOLD = {  # TOLD(3, 1, latent_dim=4, enc_dim=4, mlp_dim=4): d and R, Q (LayerNorm on the first layer)
    **{f"dyn_rew.{k}": (2, *s) for k, s in LEGACY_HEADS.items() if not k.startswith("ln")},
    "dyn_rew.w3": (2, 4, 4), "dyn_rew.b3": (2, 1, 4),
    **{f"q.{k}": (2, *s) for k, s in LEGACY_HEADS.items()}, "q.w3": (2, 4, 1), "q.b3": (2, 1, 1)}
LEGACY_TOLD_OUT = ([[4.463193893432617, 2.166290283203125, -5.021428108215332, -0.8723136186599731],
                    [4.345504283905029, 2.1378796100616455, -4.896416187286377, -0.8761172294616699],
                    [4.401971340179443, 2.1470589637756348, -4.955249309539795, -0.870136022567749]],
                   [2.426048517227173, 2.4377553462982178, 2.4193167686462402],
                   [[0.7903487682342529, 0.8223185539245605, 0.8024579286575317],
                    [0.4107264578342438, 0.4319612681865692, 0.41807326674461365]])
LEGACY_TOLD2 = {  # the same with layernorm_mish=True, num_q=3: LayerNorm on both hidden layers of every head
    **{f"dyn_rew.{k}": (2, *s) for k, s in LEGACY_HEADS.items()}, "dyn_rew.w3": (2, 4, 4), "dyn_rew.b3": (2, 1, 4),
    "dyn_rew.ln2_w": (2, 1, 4), "dyn_rew.ln2_b": (2, 1, 4),
    **{f"q.{k}": (3, *s) for k, s in LEGACY_HEADS.items()}, "q.w3": (3, 4, 1), "q.b3": (3, 1, 1),
    "q.ln2_w": (3, 1, 4), "q.ln2_b": (3, 1, 4)}
LEGACY_TOLD2_OUT = ([[0.48347705602645874, -0.8201187252998352, -0.27214115858078003, 0.8902478218078613],
                     [0.4693593382835388, -0.8237406015396118, -0.2570900619029999, 0.889991283416748],
                     [0.45790529251098633, -0.82667076587677, -0.24488098919391632, 0.8897752165794373]],
                    [-1.2564364671707153, -1.2667334079742432, -1.2591805458068848],
                    [[0.1548222303390503, 0.17580604553222656, 0.1819249987602234],
                     [-0.26751798391342163, -0.3152673840522766, -0.34579572081565857],
                     [-1.5845913887023926, -1.600309133529663, -1.610813856124878]])
LEGACY_ENSEMBLE = {"max_logvar": (2, 1, 2), "min_logvar": (2, 1, 2), "weights.0": (2, 3, 3), "weights.1": (2, 3, 4),
                   "biases.0": (2, 1, 3), "biases.1": (2, 1, 4), "input_normalizer.mean": (3,),
                   "input_normalizer.std": (3,), "target_normalizer.mean": (2,), "target_normalizer.std": (2,)}
LEGACY_ENSEMBLE_OUT = (
    [[[0.5092116594314575, 0.5870743989944458], [1.1672675609588623, 0.19948279857635498],
      [2.189967155456543, -1.0812443494796753]],
     [[-0.57237708568573, -0.8161669373512268], [0.5523761510848999, -0.16492559015750885],
      [1.0109776258468628, 0.28961148858070374]]],
    [[[0.9896906018257141, 0.7006284594535828], [0.9498544931411743, 0.8234747052192688],
      [0.9123498201370239, 1.1703572273254395]],
     [[0.0029906630516052246, 0.16506622731685638], [-0.3052378296852112, 0.14877323806285858],
      [-0.4696913957595825, 0.12979136407375336]]])


def _close(got, want) -> bool:
    return torch.allclose(got, torch.tensor(want), rtol=1e-5, atol=1e-6)


def test_checkpoints_with_the_names_from_before_ensemble_mlp_load():
    """State dicts written before EnsembleMLP (TwinQ ``weights.0``, HeadsMLP ``w1`` / ``ln1_w``, EnsembleModel
    ``weights.0``) load into the present classes and compute what they computed then."""
    from modelrl.agents.sac import TwinQ
    from modelrl.models.told import TOLD

    x = torch.linspace(-1, 1, 9).reshape(3, 3)
    q = TwinQ(3, 4, 1, num_q=2, layernorm=True)
    q.load_state_dict(_legacy_fixture(LEGACY_TWINQ))
    assert _close(q(x), LEGACY_TWINQ_OUT)
    assert q.ln_weight[0].shape == (2, 1, 4) and q.weights[1].shape == (2, 4, 1)  # the old attribute names read
    for kw, names, (z_next, r, values) in (({}, LEGACY_TOLD, LEGACY_TOLD_OUT),
                                           ({"layernorm_mish": True, "num_q": 3}, LEGACY_TOLD2, LEGACY_TOLD2_OUT)):
        m = TOLD(3, 1, latent_dim=4, enc_dim=4, mlp_dim=4, seed=0, **kw)
        mlp_names = {k: tuple(v.shape) for k, v in m.state_dict().items() if k.startswith(("encoder.", "policy."))}
        m.load_state_dict(_legacy_fixture({**mlp_names, **names}))
        z, a = m.h(x), x[:, :1]
        assert _close(m.next(z, a)[0], z_next) and _close(m.next(z, a)[1], r) and _close(m.Q(z, a), values)
        assert torch.equal(m.dyn_rew.w3, m.dyn_rew.layers[2].weight) and torch.equal(m.q.ln1_b, m.q.norms["0"].bias)
    e = EnsembleModel(2, 1, ensemble_size=2, hidden_size=3, num_layers=1, seed=0)
    state = _legacy_fixture(LEGACY_ENSEMBLE)
    for k in ("input_normalizer.std", "target_normalizer.std"):
        state[k] = state[k].abs() + 0.5
    e.load_state_dict({**state, "elite_idx": torch.tensor([1, 0])})
    mean, logvar = e(x)
    assert _close(mean, LEGACY_ENSEMBLE_OUT[0]) and _close(logvar, LEGACY_ENSEMBLE_OUT[1])
    assert e.elite_idx.tolist() == [1, 0]
    with pytest.raises(RuntimeError, match="Unexpected key"):  # names that never existed are still refused
        q.load_state_dict({**_legacy_fixture(LEGACY_TWINQ), "weights.7": torch.zeros(1)})


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
