"""``seqlevel bench markov``: the MixCE synthetic experiment on a bigram world with known P.

For each vocabulary size × seed, one P and one data set (shared by every objective, as in the official code),
then one training run per objective with the official recipe; reported are the exact ``avg_js`` and
``avg_zero_mass`` of the best-dev-epoch model (notes ``methods/mixce.md`` §2). ``--json`` prints
``{"results": [{"objective", "eta", "seed", "vocab_size", "avg_js", "avg_zero_mass", "epochs", "seconds", ...}]}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from tqdm import tqdm

from seqlevel.tasks.markov import INITS, make_world
from seqlevel.tasks.markov_train import Objective, TrainConfig, parse_objective, train_bigram

DEFAULT_OBJECTIVES = "mle,mixce:0.1,mixce:0.5,mixce:0.9,mixce:0.99,mixce_star:0.9"


def _int_list(name: str, text: str, minimum: int) -> list[int]:
    try:
        values = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{name} must be a comma list of integers, got {text!r}; e.g. 21,51") from None
    if not values:
        raise ValueError(f"{name} is empty; give at least one value, e.g. 21")
    bad = [v for v in values if v < minimum]
    if bad:
        raise ValueError(f"{name} values must be >= {minimum}, got {bad}")
    return values


def parse_objectives(text: str) -> list[Objective]:
    """``"mle,mixce:0.9,mixce_star:0.9,tailr:1e-7"`` → objectives (ValueError with a fix-it message)."""
    specs = [s for s in str(text).split(",") if s.strip()]
    if not specs:
        raise ValueError(f"--objectives is empty; e.g. {DEFAULT_OBJECTIVES}")
    return [parse_objective(s) for s in specs]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vocab-size", default="21",
                   help="comma list of V incl. PAD/BOS (21 = 20 tokens incl. EOS; paper: 21,51,101,501,1001)")
    p.add_argument("--seeds", default="7,42,777", help="comma list of seeds (paper: 7,42,777,4222,99999)")
    p.add_argument("--objectives", default=DEFAULT_OBJECTIVES,
                   help="comma list: mle, mixce:ETA (the approximation), mixce_star:ETA (exact, needs P), "
                        "tailr:GAMMA (w_min 0.2), reverse_kl, two_kls:ETA")
    p.add_argument("--train-size", type=int, default=50_000, help="training sequences (default 50000, the paper's)")
    p.add_argument("--dev-size", type=int, default=5_000, help="dev sequences for early stopping (default 5000)")
    p.add_argument("--max-epochs", type=int, default=50, help="epoch cap (default 50)")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience on the dev objective")
    p.add_argument("--batch-size", type=int, default=1000, help="sequences per batch (default 1000)")
    p.add_argument("--init", default="random", choices=INITS,
                   help="P: 'random' = Dirichlet(0.5) rows with 50%% zeros (paper), 'zipf' = ours")
    p.add_argument("--zero-percent", type=float, default=0.5, help="fraction of non-EOS transitions zeroed")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--jsonl", default=None,
                   help="also append each run's record to this file as one JSON line as soon as it finishes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def validate(args: argparse.Namespace) -> tuple[list[int], list[int], list[Objective], TrainConfig]:
    """Check every option before any work starts; returns (vocab sizes, seeds, objectives, recipe)."""
    vocab = _int_list("--vocab-size", args.vocab_size, 3)
    seeds = _int_list("--seeds", args.seeds, 0)
    objectives = parse_objectives(args.objectives)
    for name, value, lo in (("--train-size", args.train_size, 1), ("--dev-size", args.dev_size, 1),
                            ("--max-epochs", args.max_epochs, 1), ("--patience", args.patience, 1),
                            ("--batch-size", args.batch_size, 1), ("--threads", args.threads, 1)):
        if value < lo:
            raise ValueError(f"{name} must be >= {lo}, got {value}")
    if args.train_size < args.batch_size:
        raise ValueError(f"--train-size {args.train_size} is smaller than one batch ({args.batch_size}); "
                         "raise --train-size or lower --batch-size")
    if not (0.0 <= args.zero_percent < 1.0):
        raise ValueError(f"--zero-percent must be in [0, 1), got {args.zero_percent}; the paper used 0.5")
    cfg = TrainConfig(max_epochs=args.max_epochs, batch_size=args.batch_size, patience=args.patience)
    return vocab, seeds, objectives, cfg


def run_grid(vocab: list[int], seeds: list[int], objectives: list[Objective], cfg: TrainConfig,
             train_size: int, dev_size: int, init: str = "random", zero_percent: float = 0.5,
             progress: bool = True, jsonl: str | None = None) -> list[dict]:
    """Train every (V, seed, objective); one result dict per run (the ``--json`` record).

    ``jsonl``: a file to append each record to (one line, flushed) as soon as its run ends.
    """
    results = []
    bar = tqdm(total=len(vocab) * len(seeds) * len(objectives), disable=not progress, file=sys.stderr,
               desc="markov", unit="run")
    for V in vocab:
        for seed in seeds:
            p, train, dev = make_world(V, seed, train_size, dev_size, init=init, zero_percent=zero_percent)
            for obj in objectives:
                bar.set_postfix_str(f"V={V} seed={seed} {obj.label}")
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
                bar.update(1)
    bar.close()
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


def run(args: argparse.Namespace) -> int:
    vocab, seeds, objectives, cfg = validate(args)  # all errors before any work
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results = run_grid(vocab, seeds, objectives, cfg, args.train_size, args.dev_size, args.init,
                       args.zero_percent, progress=not args.no_progress, jsonl=args.jsonl)
    total = time.perf_counter() - t0
    if args.json:
        print(json.dumps({"results": results}))
        return 0
    summary = summarize(results)
    print(format_table(summary))
    print("\nbest parameter per objective (lowest mean avg_js):")
    for b in best_by_objective(summary):
        print(f"  V={b['vocab_size']:<5} {b['objective']:<11} {b['label']:<16} avg_js {b['avg_js_mean']:.3e}  "
              f"avg_zero_mass {b['avg_zero_mass_mean']:.3e}")
    print(f"\n{len(results)} runs in {total:.0f} s")
    return 0
