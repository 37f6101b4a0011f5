"""CAT benchmarks in their quick modes: the --json contracts, the speed case and ``seqlevel explain``."""

import json

import pytest

from seqlevel.attributes import AttributeModel
from seqlevel.bench.speed import build_case, measure
from seqlevel.cli import main
from seqlevel.presets import tiny_model
from seqlevel.tasks.reviews import ReviewWorld
from tests.bench.test_json_unchanged import FIXTURES, assert_same


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
def test_key_to_door_contract(capsys):
    r = _json(capsys, ["bench", "key-to-door", "--quick", "--json", "--head-refit-steps", "5"])
    # the same JSON as the argv runner printed before benchmarks became Config + run(cfg)
    assert_same(r, json.loads((FIXTURES / "bench_key-to-door.json").read_text()))
    assert set(r["win_rate"]) == {"cat", "cat_refit", "bc", "pct_bc", "random"}
    assert all(0.0 <= v <= 1.0 for v in r["win_rate"].values())
    assert r["episodes"] == 20 and r["seeds"] == [0]
    assert r["exact_q_greedy_win_rate"] == 1.0  # the ceiling: greedy on the exact Q^β
    seed = r["per_seed"][0]
    assert {"cat", "cat_refit", "bc", "pct_bc", "random"} <= set(seed)
    ref = seed["heldout_bce_reference"]
    assert ref["exact_q"] < ref["state_value"] < ref["constant"]  # the exact values are the best predictors
    assert len(seed["heldout_bce"]) == len(seed["eval_log"]["cat"]) >= 2 and all(b > 0 for b in seed["heldout_bce"])
    assert all("val_win_rate" in e and "agreement" in e for m in ("cat", "bc", "pct_bc") for e in seed["eval_log"][m])
    assert 0.5 < seed["agreement_constant"] < 1.0  # always-North is often a best action
    for k in ("cat", "bc", "pct_bc"):
        assert 0.0 <= seed[k]["agreement"] <= 1.0
    assert r["config"]["context_window"] == 1


@pytest.mark.slow
def test_cat_lm_contract(capsys):
    r = _json(capsys, ["bench", "cat-lm", "--quick", "--json"])
    assert [(row["width"], row["lambda"]) for row in r["table"]] == [(8, 0.0), (8, 0.15)]
    run = r["runs"][0]
    assert run["nll"] > run["true_nll"] > 0  # a 4-step model is far from the truth; the truth is the floor
    assert r["table"][1]["excess_minus_lm"]["mean"] == pytest.approx(r["runs"][1]["excess"] - r["runs"][0]["excess"])


def test_cat_lm_true_nll_is_the_floor():
    """The exact P scores below any model in expectation: a model that is P itself would have excess ~0; a
    random model has a large positive excess (checked on the untrained trunk)."""
    from seqlevel.bench.cat_lm import text_nll

    world = ReviewWorld()
    model = AttributeModel.for_base(tiny_model("tiny-gpt2", tokenizer=world.tokenizer, n_embd=8), "categorical", 5,
                                    rank=2).eval()
    nll, true = text_nll(model, world, world.sample(50, seed=1))
    assert true == pytest.approx(-sum(world.log_prob(w[:-1]) for w, _ in world.sample(50, seed=1))
                                 / sum(len(w) - 1 for w, _ in world.sample(50, seed=1)), rel=1e-9)  # no star
    assert nll > true + 1.0


@pytest.mark.slow
def test_attribute_estimation_contract(capsys):
    r = _json(capsys, ["bench", "attribute-estimation", "--quick", "--json"])
    for k in ("brier", "auroc", "seconds"):
        assert isinstance(r["cat"][k], float) and isinstance(r["mc"][k], float)
    assert r["mc"]["rollouts"] == 8 and r["speedup"] > 1.0
    assert r["brier_floor"] <= min(r["cat"]["brier"], r["mc"]["brier"]) + 1e-9  # the truth is the best forecast


@pytest.mark.slow
def test_steering_contract(capsys):
    r = _json(capsys, ["bench", "steering", "--quick", "--json"])
    assert set(r["targets"]) == {"1", "2", "3", "4", "5"}
    for row in r["targets"].values():
        assert set(row) == {"unsteered", "product", "satisficing", "backtrack"}
        assert all(0.0 <= m["accuracy"] <= 1.0 for m in row.values())


def test_bad_bench_input(capsys):
    assert main(["bench", "steering", "--quick", "--alpha", "-1"]) == 2
    assert "alpha must be >= 0" in capsys.readouterr().err
    assert main(["bench", "steering", "--quick", "--tau", "1.5"]) == 2


def test_speed_case_runs():
    case = build_case("cat-estimate-vs-forward", quick=True)
    r = measure(case, runs=1, warmup=0)
    assert r["a_median_s"] > 0 and r["b_median_s"] > 0


def test_explain_writes_png_and_table(tmp_path, capsys):
    world = ReviewWorld()
    base = tiny_model("tiny-gpt2", tokenizer=world.tokenizer, seed=0)
    AttributeModel.for_base(base, "categorical", 5, rank=4).save_pretrained(str(tmp_path / "m"))
    world.tokenizer.save_pretrained(str(tmp_path / "m"))
    png = tmp_path / "x.png"
    assert main(["explain", "--model", str(tmp_path / "m"), "--text", "the food was not bad , the room",
                 "--positions", "4", "5", "--output", str(png)]) == 0
    out = capsys.readouterr().out
    assert png.is_file() and png.stat().st_size > 1000
    assert "counterfactuals at t=4" in out and "credit" in out
    assert main(["explain", "--model", str(tmp_path / "m"), "--text", "the food", "--positions", "9",
                 "--output", str(png)]) == 2
    assert main(["explain", "--model", str(tmp_path / "nope"), "--text", "x"]) == 2


def test_key_to_door_decision_scores_match_a_naive_forward():
    """The bench's batched scores at held-out decisions equal a forward of each decision's own prefix (read at its
    last position), for a windowed and a full-context model; the references are ordered as they must be."""
    import numpy as np
    import torch

    from seqlevel.bench import key_to_door as b
    from seqlevel.tasks import key_to_door as ktd

    tr = ktd.random_trajectories(12, seed=3)
    dec = ktd.key_room_decisions(tr.tokens, tr.success)
    for W in (1, None):
        base = tiny_model("tiny-gpt2", vocab_size=ktd.VOCAB_SIZE, n_embd=16, seed=0)
        m = AttributeModel.for_base(base, "binary", rank=4, query_std=0.5, context_window=W).eval()
        logp, p_win = b.decision_scores(m, tr.tokens, dec, chunk=5)
        for j in range(0, len(dec.seq), 7):
            ids = torch.tensor([tr.tokens[dec.seq[j]][:dec.pos[j] + 1]])
            with torch.no_grad():
                out = m(ids, all_candidates=True)
            want_lp = out.logits[0, -1, ktd.ACTION_IDS].log_softmax(-1).numpy()
            want_p = out.attribute[0, -1, ktd.ACTION_IDS, 0].sigmoid().numpy()
            np.testing.assert_allclose(logp[j], want_lp, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(p_win[j], want_p, rtol=1e-4, atol=1e-6)
    q = dec.exact_q()
    assert b._agreement(q, q) == 1.0  # the exact values agree with themselves
    assert b.constant_agreement(dec) < 1.0  # no single action is best everywhere


def test_steering_table_explains_an_all_invalid_run():
    """issue 23: `bench steering --quick` printed a table of 0.00/0.00/nan with no explanation."""
    from seqlevel.bench.steering import format_result

    bad = {"accuracy": 0.0, "mean_p_target": 0.0, "nll": float("nan"), "invalid": 1.0}
    text = format_result({"samples": 8, "targets": {"1": {"unsteered": bad, "product": dict(bad)}}})
    assert "nan" not in text and "0.00/0.00/n/a (100% invalid)" in text
    assert "every generated text is ungrammatical" in text and "run without --quick" in text
    good = {"accuracy": 0.5, "mean_p_target": 0.4, "nll": 12.3, "invalid": 0.25}
    text = format_result({"samples": 8, "targets": {"1": {"product": good, "unsteered": bad}}})
    assert "0.50/0.40/12.3 (25% invalid)" in text and "ungrammatical in the reviews" not in text


@pytest.mark.parametrize("W", [1, 2, None])
def test_key_to_door_incremental_play_takes_the_same_actions(W, monkeypatch):
    """Play that runs only the tokens reaching the last position (W) or the KV cache (full context) takes the same
    action at every step of every episode as today's full recomputation of the whole history."""
    import numpy as np

    from seqlevel.bench import key_to_door as b
    from seqlevel.tasks import key_to_door as ktd

    base = tiny_model("tiny-gpt2", vocab_size=ktd.VOCAB_SIZE, n_embd=16, n_layer=2, seed=1)
    m = AttributeModel.for_base(base, "binary", rank=4, query_std=0.5, context_window=W).eval()
    step = ktd.KeyToDoor.step
    for mode in ("cat", "greedy"):
        runs = []
        for full in (True, False):
            actions = []

            def record(env, a, _actions=actions):
                _actions.append(np.array(a))
                return step(env, a)

            monkeypatch.setattr(ktd.KeyToDoor, "step", record)
            r = b.play(m, 40, seed=5, mode=mode, alpha=16.0, full_recompute=full)
            runs.append((np.stack(actions), r))
        (full_a, full_r), (inc_a, inc_r) = runs
        assert full_a.shape == inc_a.shape == (ktd.T1 + ktd.T2 + ktd.T3, 40)
        assert len({tuple(col) for col in full_a[: ktd.T1].T}) > 5  # the policy differs between layouts
        np.testing.assert_array_equal(inc_a, full_a)
        assert inc_r == full_r


def test_key_to_door_config_checks_models():
    from seqlevel.bench import key_to_door as b

    assert b.Config().models == ["cat", "bc", "pct_bc"] and not b.Config().dueling
    with pytest.raises(ValueError, match="models must be"):
        b.Config(models=["cat", "dt"])
    with pytest.raises(ValueError, match="head_refit_steps"):
        b.Config(models=["bc"], head_refit_steps=5)
