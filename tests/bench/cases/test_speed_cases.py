"""Each speed case builds in its quick size (the factories check that A and B do the same work) and runs once;
timing itself is a benchmark, not a test."""

from __future__ import annotations

import math

import pytest

from seqlevel.bench.cases import build
from seqlevel.bench.cases.sequencematch import synthetic_batch, synthetic_trajectories


@pytest.mark.parametrize("name", ["decode-vs-hf", "decode-backspace-vs-recompute", "rollout-throughput",
                                  "cat-estimate-vs-forward", "cat-estimate-vs-forward-k5", "sm-encoded-vs-mle",
                                  "mixce-vs-mle"])
def test_quick_case_builds_and_runs(name):
    case = build(name, "speed", device="cpu", quick=True)  # raises if the two workloads disagree
    case.a()
    case.b()
    case.sync()
    assert case.a_name and case.b_name and case.description


def test_sm_encoded_case_losses_are_finite():
    case = build("sm-encoded-vs-mle", "speed", device="cpu", quick=True)
    assert math.isfinite(case.a().item()) and math.isfinite(case.b().item())


def test_sm_workload_has_backspaces_and_no_padding():
    encs = synthetic_trajectories(4, 64, 256, p_backspace=0.3)
    assert all(len(e) == 64 for e in encs)  # same number of slots as the MLE batch
    frac = sum(int((e.actions == 255).sum()) for e in encs) / sum(len(e.actions) for e in encs)
    assert 0.2 < frac < 0.4
    batch = synthetic_batch(4, 64, 256, p_backspace=0.3)
    assert batch["input_ids"].shape == (4, 64) and batch["attention_mask"].shape == (4, 1, 64, 64)
    assert batch["is_data"].tolist() == [True, False, True, False]


def test_sm_builder_rejects_a_prompt_as_long_as_the_batch():
    with pytest.raises(ValueError, match="prompt_len must be in"):
        synthetic_trajectories(2, 8, 64, p_backspace=0.1, prompt_len=8)


def test_sm_step_case_prints_only_its_json(capsys, tmp_path, monkeypatch):
    """The SequenceMatch step case trains a real SequenceMatchTrainer: its logs must not reach stdout."""
    import json

    from seqlevel.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["bench", "speed", "--case", "sm-step-vs-mle", "--quick", "--runs", "1", "--warmup", "0", "--json",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and json.loads(out[0])["case"] == "sm-step-vs-mle"
