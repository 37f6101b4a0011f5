"""seqlevel bench markov-backspace: the metrics on hand-made samples, the noise, and the JSON contract."""

import json
import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from seqlevel.bench import markov_backspace as mb
from seqlevel.tasks.markov import make_p
from seqlevel.tasks.markov_backspace import (
    final_text_metrics,
    forbidden_noise,
    markov_tokenizer,
    to_markov_id,
    to_tokenizer_ids,
)

BK = 99


def _world():
    p = make_p(8, 3)
    tok = markov_tokenizer(p)
    return p, tok, int(tok.eos_token_id)


def _pair(p, allowed: bool):
    """A (t, u) pair of Markov tokens 1..n-1 that P allows / forbids."""
    T = p.transition
    for t in range(1, p.n):
        for u in range(1, p.n):
            if (T[t - 1, u - 1] > 0) == allowed:
                return t, u
    raise AssertionError("no such pair")


def test_ids_round_trip():
    p, tok, eos = _world()
    ids = list(range(1, p.n + 1))
    assert [to_markov_id(p, i, eos) for i in to_tokenizer_ids(p, ids, eos)] == ids
    assert to_markov_id(p, int(tok.bos_token_id), eos) == 0


def test_final_text_metrics_on_hand_made_samples():
    p, _, eos = _world()
    t, bad = _pair(p, allowed=False)
    t2, good = _pair(p, allowed=True)
    ids = lambda *ks: to_tokenizer_ids(p, ks, eos)  # noqa: E731
    samples = [
        ids(t, bad) + [BK] + [eos],  # a forbidden token deleted: precise deletion, clean final text
        ids(t2, good) + [BK] + ids(good) + [eos],  # a valid token deleted (false deletion), clean final text
        ids(t, bad) + [eos],  # an impossible bigram left in the final text
    ]
    m = final_text_metrics(p, samples, eos, BK)
    # final texts: [t, eos], [t2, good, eos], [t, bad, eos] -> 8 tokens, one impossible bigram
    assert m["impossible_rate"] == pytest.approx(1 / 8)
    assert m["impossible_seq_rate"] == pytest.approx(1 / 3)
    assert m["backspace_precision"] == pytest.approx(1 / 2)
    assert m["false_deletion_rate"] == pytest.approx(1 / 3)
    assert m["backspace_rate"] == pytest.approx(2 / 12)
    assert m["finished_rate"] == 1.0


def test_forbidden_noise_declines_after_bos_and_is_always_forbidden():
    p, tok, eos = _world()
    noise = forbidden_noise(p, eos)
    rng = random.Random(0)
    assert noise([int(tok.bos_token_id)], 5, rng) is None
    for t in range(1, p.n):
        u = noise([int(tok.bos_token_id), *to_tokenizer_ids(p, [t], eos)], 0, rng)
        if u is None:
            assert (p.transition[t - 1, : p.n - 1] > 0).all()
        else:
            assert p.transition[t - 1, to_markov_id(p, u, eos) - 1] == 0.0


def test_token_nll_matches_a_loop_and_ignores_the_backspace_logit():
    from seqlevel.presets import tiny_model
    from seqlevel.tasks.markov import sample
    from seqlevel.tasks.markov_backspace import dataset_columns, token_nll

    p, tok, eos = _world()
    dev = sample(p, 12, seed=1)
    model = tiny_model("tiny-gpt2", tokenizer=tok, seed=0, n_layer=1, n_embd=16, n_head=2, n_positions=600)
    bk = model.config.vocab_size - 1  # pretend the last row is <bksp>
    got = token_nll(model, p, dev, tok, bk, max_tokens=500, batch_size=5)
    cols = dataset_columns(p, dev, tok, 500)
    total, n = 0.0, 0
    with torch.no_grad():
        for pr, c in zip(cols["prompt_ids"], cols["completion_ids"]):
            ids = torch.tensor([pr + c])
            logits = model(input_ids=ids).logits[0].float()
            logits[:, bk] = float("-inf")
            lp = torch.log_softmax(logits, -1)
            for k in range(ids.shape[1] - 1):
                total -= float(lp[k, ids[0, k + 1]])
                n += 1
    assert got == pytest.approx(total / n, rel=1e-5)


def test_quick_benchmark_json_contract():
    cfg = replace(mb.QUICK, n_train=200, n_dev=20, pretrain_steps=4, finetune_steps=2, n_samples=20, eval_every=2,
                  n_embd=16, rollouts_per_refresh=4, replay_batch_size=2, replay_buffer_size=8, max_new_actions=12,
                  sample_every=1)
    out = mb.run(cfg)
    json.dumps(out)
    assert [r["method"] for r in out["results"]] == list(mb.METHODS)
    for r in out["results"]:
        for k in ("method", "seed", "impossible_rate", "impossible_seq_rate", "token_nll", "false_deletion_rate",
                  "avg_js", "avg_zero_mass", "backspace_rate", "seconds"):
            assert k in r, k
        assert r["curve"] and r["curve"][-1][0] in (cfg.pretrain_steps, cfg.finetune_steps)
        assert np.isfinite(r["token_nll"])
    assert out["results"][0]["backspace_rate"] == 0.0  # mle has no <bksp>


@pytest.mark.parametrize("argv, msg", [(["--methods", "mle,nope"], "unknown"), (["--vocab-size", "3"], ">= 4")])
def test_bad_flags_are_refused(argv, msg, capsys):
    from seqlevel.cli import main

    assert main(["bench", "markov-backspace", *argv]) == 2
    assert msg in capsys.readouterr().err


# ----- issue 21: noise coverage, the covered/uncovered split, the exact deletion probe ------------------------------

def test_covered_pairs_is_a_fixed_share_of_the_forbidden_pairs():
    from seqlevel.tasks.markov_backspace import covered_pairs, forbidden_pairs

    p = make_p(21, 0)
    forbidden = forbidden_pairs(p)
    assert np.array_equal(covered_pairs(p, 1.0, 0), forbidden)
    half = covered_pairs(p, 0.5, 0)
    assert not (half & ~forbidden).any()  # only forbidden pairs are covered
    assert half.sum() == round(0.5 * forbidden.sum())
    assert np.array_equal(half, covered_pairs(p, 0.5, 0))  # fixed per world seed
    assert not np.array_equal(half, covered_pairs(p, 0.5, 1))
    assert not forbidden[:, -1].any() and not forbidden[-1].any()  # EOS is never part of a pair
    with pytest.raises(ValueError, match="noise_coverage"):
        covered_pairs(p, 1.5, 0)


def test_noise_inserts_covered_pairs_only():
    from seqlevel.tasks.markov_backspace import covered_pairs

    p, tok, eos = _world()
    cov = covered_pairs(p, 0.5, 3)
    noise = forbidden_noise(p, eos, cov)
    rng = random.Random(0)
    seen = set()
    for _ in range(400):
        t = rng.randrange(1, p.n)
        u = noise([int(tok.bos_token_id), *to_tokenizer_ids(p, [t], eos)], 0, rng)
        if u is None:
            assert not cov[t - 1].any()
        else:
            seen.add((t, to_markov_id(p, u, eos)))
    assert seen and all(cov[t - 1, u - 1] for t, u in seen)
    assert seen == {(t + 1, u + 1) for t, u in zip(*np.nonzero(cov))}  # and every covered pair occurs


def test_final_text_metrics_split_covered_and_uncovered():
    from seqlevel.tasks.markov_backspace import covered_pairs, forbidden_pairs

    p, _, eos = _world()
    forb = forbidden_pairs(p)
    cov = np.zeros_like(forb)
    (t1, u1), (t2, u2) = [(int(a) + 1, int(b) + 1) for a, b in zip(*np.nonzero(forb))][:2]
    cov[t1 - 1, u1 - 1] = True  # (t1, u1) covered, (t2, u2) not
    ids = lambda *ks: to_tokenizer_ids(p, ks, eos)  # noqa: E731
    samples = [ids(t1, u1) + [eos], ids(t2, u2) + [eos], ids(t2, u2) + [eos]]
    m = final_text_metrics(p, samples, eos, BK, cov)
    assert m["covered_rate"] == pytest.approx(1 / 9) and m["uncovered_rate"] == pytest.approx(2 / 9)
    assert m["covered_rate"] + m["uncovered_rate"] == pytest.approx(m["impossible_rate"])
    m_all = final_text_metrics(p, samples, eos, BK, covered_pairs(p, 1.0, 0))
    assert m_all["uncovered_rate"] == 0.0 and m_all["covered_rate"] == pytest.approx(3 / 9)


def test_deletion_probe_matches_a_loop_over_single_prefixes():
    from seqlevel.presets import tiny_model
    from seqlevel.tasks.markov import sample
    from seqlevel.tasks.markov_backspace import (
        covered_pairs,
        dataset_columns,
        deletion_probe,
        forbidden_pairs,
        probe_states,
    )

    p, tok, eos = make_p(12, 5), None, None
    tok = markov_tokenizer(p)
    eos = int(tok.eos_token_id)
    dev = sample(p, 30, seed=2)
    cov = covered_pairs(p, 0.5, 5)
    model = tiny_model("tiny-gpt2", tokenizer=tok, seed=0, n_layer=1, n_embd=16, n_head=2, n_positions=600)
    bk = model.config.vocab_size - 1  # pretend the last row is <bksp>
    got = deletion_probe(model, p, dev, tok, bk, cov, max_tokens=500, n_prefixes=20, seed=1, batch_size=7,
                         details=True)
    assert model.training  # the probe evaluates in eval mode and puts the model back
    model.eval()
    # the loop: the same prefixes, every u of each group, one sequence at a time, no padding
    rng = np.random.default_rng([1, 404])
    comps = [c for c in dataset_columns(p, dev, tok, 500)["completion_ids"] if len(c) >= 2]
    forb = forbidden_pairs(p)
    sums = {g: [] for g in ("uncovered", "covered", "valid")}
    with torch.no_grad():
        for i in rng.choice(len(comps), size=20, replace=len(comps) < 20):
            c = comps[int(i)]
            k = int(rng.integers(1, len(c)))
            t = to_markov_id(p, c[k - 1], eos)
            for u in range(1, p.n):  # world tokens 1..n-1 (EOS is never a probe token)
                g = ("uncovered" if forb[t - 1, u - 1] and not cov[t - 1, u - 1] else
                     "covered" if forb[t - 1, u - 1] else "valid")
                ids = torch.tensor([[int(tok.bos_token_id)] + c[:k] + to_tokenizer_ids(p, [u], eos)])
                sums[g].append(float(torch.softmax(model(input_ids=ids).logits[0, -1].float(), -1)[bk]))
    states = probe_states(p, dev, tok, cov, 500, 20, 1)
    assert {g: len(v) for g, v in states.items()} == {g: len(v) for g, v in sums.items()}
    for g, xs in sums.items():
        assert got[f"p_bksp_{g}"] == pytest.approx(sum(xs) / len(xs), rel=1e-5), g
    assert got["v_parent"] is not None and got["q_bksp_valid"] is not None
    empty = deletion_probe(model, p, dev, tok, bk, covered_pairs(p, 1.0, 5), 500, n_prefixes=5)
    assert empty["p_bksp_uncovered"] is None  # nothing is uncovered at coverage 1.0


def test_benchmark_at_half_coverage_reports_the_split_and_the_probe_curve():
    cfg = replace(mb.QUICK, n_train=200, n_dev=20, pretrain_steps=4, finetune_steps=2, n_samples=20, eval_every=2,
                  n_embd=16, rollouts_per_refresh=4, replay_batch_size=2, replay_buffer_size=8, max_new_actions=12,
                  sample_every=1, noise_coverage=0.5, probe_prefixes=10, methods=("bc", "sequencematch"))
    out = mb.run(cfg)
    json.dumps(out)
    for r in out["results"]:
        assert r["covered_rate"] + r["uncovered_rate"] <= r["impossible_rate"] + 1e-12
        for k in ("p_bksp_uncovered", "p_bksp_covered", "p_bksp_valid"):
            assert 0.0 <= r[k] <= 1.0
        assert [c[0] for c in r["probe_curve"]] == [c[0] for c in r["curve"]]
    assert "uncovered" in mb.format_result(out)
