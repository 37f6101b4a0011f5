"""``seqlevel bench arithmetic``: the JSON contract, the three methods, the recovery check, bad input."""

import json

import pytest
import torch

from seqlevel.bench.arithmetic import _deletes_first
from seqlevel.cli import main
from seqlevel.decoding.steer import ForceFirst

KEYS = {"method": str, "noise": float, "noise_type": str, "seed": int, "accuracy": float, "backspace_rate": float,
        "train_seconds": float, "recovery_rate": float}


def test_json_contract_on_a_few_steps(tmp_path, capsys):
    rc = main(["bench", "arithmetic", "--quick", "--steps", "4", "--noises", "0.3", "--json",
               "--output-dir", str(tmp_path)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["results"]
    assert {r["method"] for r in rows} == {"mle", "bc", "sequencematch"}
    for r in rows:
        for k, t in KEYS.items():
            assert isinstance(r[k], t), (k, r[k])
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["recovery_rate"] <= 1.0
    mle = next(r for r in rows if r["method"] == "mle")
    assert mle["noise"] == 0.0 and mle["backspace_rate"] == 0.0  # no <bksp> in MLE's action space


def test_recovery_counts_only_deleted_first_tokens():
    bk = 99
    assert _deletes_first([5, bk, 6, 2], bk)  # wrong digit deleted, then rewritten
    assert _deletes_first([5, 7, bk, bk, 6], bk)
    assert not _deletes_first([5, 6, bk, 7, 2], bk)  # only the second token was deleted
    assert not _deletes_first([5, 2], bk)


def test_force_first_steer_forces_only_step_zero():
    class Ctx:
        rows = torch.tensor([0, 1])

    ban = lambda s, c: s  # noqa: E731
    steer = ForceFirst(torch.tensor([3, 4]), ban)
    ctx = Ctx()
    ctx.step = 0
    s = steer(torch.zeros(2, 6), ctx)
    assert s.argmax(1).tolist() == [3, 4] and torch.isinf(s).sum() == 10
    ctx.step = 1
    assert torch.equal(steer(torch.zeros(2, 6), ctx), torch.zeros(2, 6))


@pytest.mark.parametrize("argv,msg", [(["--noises", "1.5"], "--noises must be in"), (["--steps", "0"], "--steps"),
                                      (["--steps", "10", "--bc-warmup-steps", "11"], "--bc-warmup-steps must be in"),
                                      (["--n-embd", "30"], "--n-embd must be a positive multiple of 4")])
def test_bad_input(argv, msg, capsys):
    assert main(["bench", "arithmetic", "--quick", *argv]) == 2
    assert msg in capsys.readouterr().err


def test_model_and_warmup_flags_reach_the_config():
    from seqlevel.commands.bench import parse_config

    cfg = parse_config("arithmetic", ["--steps", "4000", "--bc-warmup-steps", "2666", "--n-layer", "4",
                                      "--n-embd", "128"])
    model = dict(cfg.model_overrides)
    assert (cfg.steps, cfg.warmup(), model["n_layer"], model["n_embd"]) == (4000, 2666, 4, 128)
    quick = parse_config("arithmetic", ["--quick", "--steps", "4"])  # the preset, then the flags given
    assert (quick.steps, quick.warmup(), quick.n_embd, quick.seeds) == (4, 2, 48, (0,))
    assert parse_config("arithmetic", []).warmup() == 800
