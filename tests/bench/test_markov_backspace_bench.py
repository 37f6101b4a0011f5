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
