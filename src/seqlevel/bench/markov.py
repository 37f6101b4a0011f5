"""``seqlevel bench markov``: the MixCE synthetic experiment on a bigram world with known P.

For each vocabulary size × seed, one P and one data set (shared by every objective, as in the official code),
then one training run per objective with the official recipe; reported are the exact ``avg_js`` and
``avg_zero_mass`` of the best-dev-epoch model (notes ``methods/mixce.md`` §2). ``run(cfg)`` returns (``--json`` prints)
``{"results": [{"objective", "eta", "seed", "vocab_size", "avg_js", "avg_zero_mass", "epochs", "seconds", ...}]}``.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass

import torch

from seqlevel.bench import progress
from seqlevel.tasks.markov import INITS, make_world
from seqlevel.tasks.markov_train import Objective, TrainConfig, parse_objective, train_bigram

DEFAULT_OBJECTIVES = "mle,mixce:0.1,mixce:0.5,mixce:0.9,mixce:0.99,mixce_star:0.9"


def parse_objectives(text) -> list[Objective]:
    """``"mle,mixce:0.9,mixce_star:0.9,tailr:1e-7"`` (or a sequence of specs) → objectives (ValueError with a
    fix-it message)."""
    specs = [s for s in (str(text).split(",") if isinstance(text, str) else text) if s.strip()]
    if not specs:
        raise ValueError(f"--objectives is empty; e.g. {DEFAULT_OBJECTIVES}")
    return [parse_objective(s) for s in specs]


@dataclass
class Config:
    """One grid of the MixCE synthetic experiment (the defaults are the paper's sizes at V = 21, three seeds)."""

    vocab_size: tuple[int, ...] = (21,)
    """V incl. PAD/BOS (21 = 20 tokens incl. EOS; paper: 21,51,101,501,1001)."""
    seeds: tuple[int, ...] = (7, 42, 777)
    """Seeds, one world and data set each (paper: 7,42,777,4222,99999)."""
    objectives: tuple[str, ...] = tuple(DEFAULT_OBJECTIVES.split(","))
    """mle, mixce:ETA (the approximation), mixce_star:ETA (exact, needs P), tailr:GAMMA (w_min 0.2), reverse_kl,
    two_kls:ETA."""
    train_size: int = 50_000
    """Training sequences (the paper's 50,000)."""
    dev_size: int = 5_000
    """Dev sequences for early stopping."""
    max_epochs: int = 50
    """Epoch cap."""
    patience: int = 5
    """Early-stopping patience on the dev objective."""
    batch_size: int = 1000
    """Sequences per batch."""
    init: str = "random"
    """P: 'random' = Dirichlet(0.5) rows with 50% zeros (the paper's), 'zipf' = ours."""
    zero_percent: float = 0.5
    """Fraction of non-EOS transitions zeroed."""
    threads: int = 1
    """torch CPU threads."""
    jsonl: str | None = None
    """Also append each run's record to this file as one JSON line as soon as it finishes."""

    def __post_init__(self):
        for name, values, lo in (("--vocab-size", self.vocab_size, 3), ("--seeds", self.seeds, 0)):
            if not values:
                raise ValueError(f"{name} is empty; give at least one value, e.g. 21")
            bad = [v for v in values if v < lo]
            if bad:
                raise ValueError(f"{name} values must be >= {lo}, got {bad}")
        parse_objectives(self.objectives)
        for name, value in (("--train-size", self.train_size), ("--dev-size", self.dev_size),
                            ("--max-epochs", self.max_epochs), ("--patience", self.patience),
                            ("--batch-size", self.batch_size), ("--threads", self.threads)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.train_size < self.batch_size:
            raise ValueError(f"--train-size {self.train_size} is smaller than one batch ({self.batch_size}); "
                             "raise --train-size or lower --batch-size")
        if not (0.0 <= self.zero_percent < 1.0):
            raise ValueError(f"--zero-percent must be in [0, 1), got {self.zero_percent}; the paper used 0.5")
        if self.init not in INITS:
            raise ValueError(f"--init must be one of {INITS}, got {self.init!r}")


def run_grid(vocab: list[int], seeds: list[int], objectives: list[Objective], cfg: TrainConfig,
             train_size: int, dev_size: int, init: str = "random", zero_percent: float = 0.5,
             jsonl: str | None = None) -> list[dict]:
    """Train every (V, seed, objective); one result dict per run (the ``--json`` record). The progress bar
    counts runs.

    ``jsonl``: a file to append each record to (one line, flushed) as soon as its run ends.
    """
    with progress.bar("markov", total=len(vocab) * len(seeds) * len(objectives), unit="run"):
        return _grid(vocab, seeds, objectives, cfg, train_size, dev_size, init, zero_percent, jsonl)


def _grid(vocab, seeds, objectives, cfg, train_size, dev_size, init, zero_percent, jsonl) -> list[dict]:
    results = []
    for V in vocab:
        for seed in seeds:
            p, train, dev = make_world(V, seed, train_size, dev_size, init=init, zero_percent=zero_percent)
            for obj in objectives:
                progress.note(f"V={V} seed={seed} {obj.label}")
                r = train_bigram(p, train, dev, obj, seed, cfg)
                results.append({
                    "objective": obj.name, "eta": obj.eta, "seed": seed, "vocab_size": V,
                    "avg_js": r.avg_js, "avg_zero_mass": r.avg_zero_mass, "epochs": r.epochs,
                    "seconds": round(r.seconds, 3), "best_epoch": r.best_epoch, "init": init,
                    "param": obj.param, "label": obj.label, "train_size": train_size,
                })
                if jsonl:
                    with open(jsonl, "a") as f:
                        f.write(json.dumps(results[-1]) + "\n")
                progress.advance(1)
    return results


def summarize(results: list[dict]) -> list[dict]:
    """Mean ± sample std over seeds per (V, objective label), in first-seen order."""
    groups: dict[tuple[int, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["vocab_size"], r["label"]), []).append(r)

    def ms(xs: list[float]) -> tuple[float, float]:
        return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)

    out = []
    for (V, label), rs in groups.items():
        js, zm = ms([r["avg_js"] for r in rs]), ms([r["avg_zero_mass"] for r in rs])
        out.append({"vocab_size": V, "label": label, "objective": rs[0]["objective"], "param": rs[0]["param"],
                    "n_seeds": len(rs), "avg_js_mean": js[0], "avg_js_std": js[1], "avg_zero_mass_mean": zm[0],
                    "avg_zero_mass_std": zm[1], "epochs_mean": statistics.fmean(r["epochs"] for r in rs),
                    "seconds_mean": statistics.fmean(r["seconds"] for r in rs)})
    return out


def best_by_objective(summary: list[dict]) -> list[dict]:
    """Per (V, objective family), the parameter with the lowest mean avg_js (the paper's selection, §2.5)."""
    best: dict[tuple[int, str], dict] = {}
    for s in summary:
        key = (s["vocab_size"], s["objective"])
        if key not in best or s["avg_js_mean"] < best[key]["avg_js_mean"]:
            best[key] = s
    return list(best.values())


def format_table(summary: list[dict]) -> str:
    """A fixed-width table of the summary (mean ± std over seeds)."""
    head = f"{'V':>5}  {'objective':<16} {'seeds':>5}  {'avg_js (mean ± std)':<24} {'avg_zero_mass (mean ± std)':<26} {'epochs':>6} {'s/run':>7}"
    lines = [head, "-" * len(head)]
    for s in summary:
        lines.append(
            f"{s['vocab_size']:>5}  {s['label']:<16} {s['n_seeds']:>5}  "
            f"{s['avg_js_mean']:.3e} ± {s['avg_js_std']:.1e}      {s['avg_zero_mass_mean']:.3e} ± "
            f"{s['avg_zero_mass_std']:.1e}        {s['epochs_mean']:>6.1f} {s['seconds_mean']:>7.1f}"
        )
    return "\n".join(lines)


def run(cfg: Config) -> dict:
    """The grid of ``cfg``; returns ``{"results": [...]}`` and prints nothing but a progress bar."""
    torch.set_num_threads(cfg.threads)
    recipe = TrainConfig(max_epochs=cfg.max_epochs, batch_size=cfg.batch_size, patience=cfg.patience)
    results = run_grid(list(cfg.vocab_size), list(cfg.seeds), parse_objectives(cfg.objectives), recipe,
                       cfg.train_size, cfg.dev_size, cfg.init, cfg.zero_percent, jsonl=cfg.jsonl)
    return {"results": results}


def format_result(result: dict) -> str:
    """The summary table and the best parameter per objective (lowest mean avg_js)."""
    summary = summarize(result["results"])
    lines = [format_table(summary), "", "best parameter per objective (lowest mean avg_js):"]
    for b in best_by_objective(summary):
        lines.append(f"  V={b['vocab_size']:<5} {b['objective']:<11} {b['label']:<16} avg_js {b['avg_js_mean']:.3e}  "
                     f"avg_zero_mass {b['avg_zero_mass_mean']:.3e}")
    lines.append(f"\n{len(result['results'])} runs in {sum(r['seconds'] for r in result['results']):.0f} s")
    return "\n".join(lines)
