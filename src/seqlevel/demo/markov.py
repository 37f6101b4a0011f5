"""Demo section (a): MLE vs the MixCE approximation (η sweep) vs the exact MixCE* on the bigram world of the
MixCE synthetic experiment, scored exactly against the true P (``seqlevel.tasks.markov``)."""

from __future__ import annotations

import time

import torch

from seqlevel.bench import markov
from seqlevel.bench.markov import best_by_objective, format_table, summarize
from seqlevel.demo.section import Section, figure_png


def _markov_config(quick: bool) -> dict:
    # Smaller batches than the paper's 1000 so that the small data still gives enough optimizer steps.
    if quick:  # < 1 min on 2 CPU cores: a smoke run, far from converged
        return {"vocab": [21], "seeds": [7], "train_size": 2000, "dev_size": 500, "batch_size": 100,
                "max_epochs": 3, "objectives": "mle,mixce:0.5,mixce:0.9,mixce_star:0.9"}
    # ~2 min on 2 CPU cores (the whole demo must stay under 10): the paper's V = 21, 4% of its data, one seed;
    # the full fidelity grid is `seqlevel bench markov` (docs/results.md)
    return {"vocab": [21], "seeds": [7], "train_size": 2000, "dev_size": 500, "batch_size": 100,
            "max_epochs": 12, "objectives": "mle,mixce:0.1,mixce:0.5,mixce:0.9,mixce_star:0.9"}


def _eta_sweep_png(summary: list[dict]) -> bytes:
    """Two panels (avg_js, avg_zero_mass) against η for MixCE, with MLE and MixCE* marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, name in ((axes[0], "avg_js_mean", "avg_js (nats)"), (axes[1], "avg_zero_mass_mean", "avg_zero_mass")):
        mix = sorted((s for s in summary if s["objective"] == "mixce"), key=lambda s: s["param"])
        ax.plot([s["param"] for s in mix], [s[key] for s in mix], "o-", label="MixCE (approx.)")
        for s in summary:
            if s["objective"] == "mle":
                ax.axhline(s[key], color="k", ls="--", label="MLE")
            if s["objective"] == "mixce_star":
                ax.plot([s["param"]], [s[key]], "r*", ms=12, label=f"MixCE* η={s['param']:g}")
        ax.set_xlabel("η (1 = MLE)")
        ax.set_ylabel(name)
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle("Bigram world (known P): MixCE η sweep, mean over seeds")
    fig.tight_layout()
    return figure_png(fig, dpi=100)


def section_markov(quick: bool) -> Section:
    """MLE vs MixCE (η sweep) vs MixCE* on the MixCE synthetic bigram task (small configuration)."""
    c = _markov_config(quick)
    cfg = markov.Config(vocab_size=tuple(c["vocab"]), seeds=tuple(c["seeds"]), objectives=tuple(c["objectives"].split(",")),
                        train_size=c["train_size"], dev_size=c["dev_size"], batch_size=c["batch_size"],
                        max_epochs=c["max_epochs"], threads=torch.get_num_threads())
    t0 = time.perf_counter()
    results = markov.run(cfg)["results"]
    seconds = time.perf_counter() - t0
    summary = summarize(results)
    table = format_table(summary)
    best = best_by_objective(summary)
    by = {s["label"]: s for s in summary}
    mle = by.get("mle")
    lines = [
        "## Markov oracle (MixCE synthetic experiment, small configuration)",
        "",
        f"True P: bigram, V={c['vocab']}, Dirichlet(0.5) rows with 50% of non-EOS transitions forbidden; "
        f"{c['train_size']} training / {c['dev_size']} dev sequences, batches of {c['batch_size']}; seeds "
        f"{c['seeds']}; up to "
        f"{c['max_epochs']} epochs, early stopping on the dev objective. Metrics are exact (lower is better): "
        "`avg_js` = mean per-row JS divergence to P, `avg_zero_mass` = mean learned probability of forbidden "
        "transitions.",
        "",
        "```",
        table,
        "```",
        "",
    ]
    if mle is not None:
        for b in best:
            if b["objective"] == "mle":
                continue
            js = "lower" if b["avg_js_mean"] < mle["avg_js_mean"] else "not lower"
            zm = "lower" if b["avg_zero_mass_mean"] < mle["avg_zero_mass_mean"] else "not lower"
            lines.append(f"- best {b['objective']} ({b['label']}): avg_js {js} than MLE "
                         f"({b['avg_js_mean']:.2e} vs {mle['avg_js_mean']:.2e}), avg_zero_mass {zm} "
                         f"({b['avg_zero_mass_mean']:.2e} vs {mle['avg_zero_mass_mean']:.2e}).")
    lines += ["", "![eta sweep](markov_eta_sweep.png)", "", f"Time: {seconds:.0f} s.", ""]
    headline = []
    if mle is not None:
        headline.append(("Markov MLE: avg_js / zero-mass", f"{mle['avg_js_mean']:.2e} / {mle['avg_zero_mass_mean']:.2e}"))
        for b in best:
            if b["objective"] != "mle":
                headline.append((f"Markov best {b['label']}: avg_js / zero-mass",
                                 f"{b['avg_js_mean']:.2e} / {b['avg_zero_mass_mean']:.2e}"))
    return Section(
        title="markov",
        markdown="\n".join(lines),
        metrics={"config": c, "results": results, "summary": summary, "seconds": seconds, "headline": headline},
        figures={"markov_eta_sweep.png": _eta_sweep_png(summary)},
    )
