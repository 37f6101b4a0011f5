"""The SequenceMatch objective's optimum in exact tabular worlds (seqlevel.tasks.tabular).

Free logit rows per state, exact data and model occupancies, L-BFGS to convergence on the library's own
sequencematch_loss (fixed-point in the model-side weights). Tolerances are the issue's acceptance figures.
"""

import pytest
import torch

from seqlevel.tasks.tabular import TabularWorld, report, solve

DEFAULTS = dict(sm_weight=0.5, chi2_weight=0.01, gamma=0.998)  # the trainer's defaults


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("p_noise", [0.0, 0.2])
def test_default_objective_recovers_the_expert(p_noise):
    world = TabularWorld(p_noise=p_noise, horizon=4)
    r = report(world, *solve(world, **DEFAULTS))
    assert r["tv"] <= 0.01 and r["tv_max"] <= 0.01, r
    assert r["final_kl"] <= 0.005, r
    assert abs(r["entropy"] - r["expert_entropy"]) <= 0.01, r
    assert r["bksp_clean"] <= 0.01, r  # no token + <bksp> loops at clean states


@pytest.mark.parametrize("p_noise", [0.0, 0.2])
def test_sequencematch_backspaces_where_only_the_model_goes_and_bc_cannot(p_noise):
    # the model slips into forbidden-token states that no data (and no noise) ever visits
    world = TabularWorld(p_noise=p_noise, horizon=4, model_slip=0.1)
    bc = report(world, *solve(world, sm_weight=0.0))
    sm = report(world, *solve(world, **DEFAULTS))
    assert bc["bksp_offdata_model_only"] == pytest.approx(0.2, abs=1e-6)  # BC has no signal there: its init
    assert sm["bksp_offdata_model_only"] >= 0.6, sm
    assert sm["bksp_offdata_model_only"] >= 1.5 * bc["bksp_offdata_model_only"], (sm, bc)
    assert sm["final_kl"] < bc["final_kl"], (sm, bc)  # the deletions recover the expert's strings
    assert sm["tv"] <= 0.01, sm


def test_tv_divergence_is_gamma_weighted_bc():
    # φ linear, no r² terms: nothing is added over BC, so the off-data rows keep their initialisation
    world = TabularWorld(horizon=4, model_slip=0.1)
    r = report(world, *solve(world, sm_weight=0.5, divergence="tv", gamma=0.998))
    assert r["tv"] <= 1e-3
    assert r["bksp_offdata_model_only"] == pytest.approx(0.2, abs=1e-3)


def test_exact_occupancies_sum_to_one():
    from seqlevel.tasks.tabular import _enumerate, _model_prob

    world = TabularWorld(p_noise=0.3, horizon=4, model_slip=0.2)
    en = _enumerate(world)
    assert float(en.data_prob.sum()) == pytest.approx(1.0, abs=1e-12)
    table = torch.randn(len(en.states), world.n_actions, dtype=torch.float64)
    assert float(_model_prob(table, en, world).sum()) == pytest.approx(1.0, abs=1e-12)


def test_world_rejects_bad_settings():
    with pytest.raises(ValueError, match="n_tokens"):
        TabularWorld(n_tokens=2)
    with pytest.raises(ValueError, match="horizon"):
        TabularWorld(max_len=3, horizon=3)
