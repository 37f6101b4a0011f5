"""``seqlevel bench task``: every registered task runs through the generic benchmark, and a new task is one class
plus one registry line."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from seqlevel.bench import task as bench_task
from seqlevel.cli import main
from seqlevel.tasks import TASKS
from seqlevel.tasks.base import Task
from seqlevel.tasks.reviews import word_tokenizer


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_registered_task_runs(name):
    r = bench_task.run(replace(bench_task.QUICK, task=name))
    json.dumps(r)
    assert r["task"] == name and len(r["per_seed"]) == 1
    assert set(r["mean"]["score"]) == set(r["mean"]["data_score"])
    if r["exact_p"]:
        m = r["mean"]
        assert 0.0 <= m["impossible"] <= 1.0 and m["true_nll"] > 0
        assert m["excess"] == pytest.approx(m["model_nll"] - m["true_nll"])


class CoinTask:
    """A new task in a few lines: ``<bos>`` then 1-3 fair coin flips ("h"/"t"), then ``<eos>``; exact P."""

    name = "coin"
    exact_p = True

    def __init__(self):
        self.tokenizer = word_tokenizer(("h", "t"))
        self.h, self.t = self.tokenizer.convert_tokens_to_ids(["h", "t"])

    def sample(self, n: int, seed: int = 0) -> list[list[int]]:
        rng = np.random.default_rng(seed)
        tok = self.tokenizer
        return [[tok.bos_token_id, *rng.choice([self.h, self.t], size=rng.integers(1, 4)).tolist(), tok.eos_token_id]
                for _ in range(n)]

    def log_prob(self, ids) -> float:
        body = list(ids)[1:-1]
        ok = 1 <= len(body) <= 3 and all(t in (self.h, self.t) for t in body) and ids[-1] == self.tokenizer.eos_token_id
        return math.log(1 / 3) + len(body) * math.log(0.5) if ok else -math.inf

    def score(self, ids) -> dict[str, float]:
        return {"heads": float(sum(t == self.h for t in ids)), "valid": float(math.isfinite(self.log_prob(ids)))}


def test_a_new_task_is_one_class_plus_one_registry_line(monkeypatch, capsys):
    assert isinstance(CoinTask(), Task)
    monkeypatch.setitem(TASKS, "coin", f"{__name__}:CoinTask")  # the registry line
    assert main(["bench", "task", "--quick", "--task", "coin", "--steps", "30", "--json", "--no-progress"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["task"] == "coin" and r["exact_p"]
    assert r["mean"]["data_score"]["valid"] == 1.0 and 0.0 <= r["mean"]["score"]["valid"] <= 1.0
    assert r["mean"]["true_nll"] == pytest.approx(  # exact: E[-log P] / E[tokens after <bos>] over the fresh data
        -sum(CoinTask().log_prob(s) for s in CoinTask().sample(16, seed=10_000))
        / sum(len(s) - 1 for s in CoinTask().sample(16, seed=10_000)))


def test_bad_task_is_one_line(capsys):
    assert main(["bench", "task", "--task", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--task must be one of" in err and "markov" in err and len(err.strip().splitlines()) == 1
