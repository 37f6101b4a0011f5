"""Issue 21, item 3: the tabular instrument's optimum at every setting of the network screen.

The "noise + slips" world of :mod:`seqlevel.tasks.tabular` (horizon 4, environment noise 0.2, model slips 0.1):
the noise token is an error the data shows ("covered"), the slip (the forbidden token after token 0) an error
only the model makes ("uncovered"). For each setting, the optimum of ``(1 − w)·BC + w·SM`` (exact occupancies,
fixed point) and its π(⌫) at the slip states, at the noise states and at the expert states, and its policy TV
from the expert. Rollout temperature and the number of rollouts have no tabular counterpart (occupancies are
exact).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sm_tabular_sweep.py > /tmp/tabular_sweep.md
"""

from __future__ import annotations

import sys

from seqlevel.tasks.tabular import TabularWorld, report, solve

SETTINGS = {
    "bc": dict(sm_weight=0.0),
    "tv": dict(sm_weight=0.5, divergence="tv"),
    **{f"c={c}": dict(sm_weight=0.5, chi2_weight=c) for c in (0.01, 0.05, 0.25, 1.0)},
    **{f"c={c}, no normalisation": dict(sm_weight=0.5, chi2_weight=c, occupancy_normalize=False) for c in (0.01, 0.25)},
    **{f"c={c}, eos={e}": dict(sm_weight=0.5, chi2_weight=c, eos=e) for c in (0.01, 0.25)
       for e in ("done", "absorbing_eos")},
    **{f"c=0.25, w={w}": dict(sm_weight=w, chi2_weight=0.25) for w in (0.1, 0.9)},
    **{f"c={c}, w={w}, eos=absorbing_eos": dict(sm_weight=w, chi2_weight=c, eos="absorbing_eos")
       for c in (0.25, 1.0) for w in (0.5, 0.9)},
}


def main() -> int:
    world = TabularWorld(horizon=4, p_noise=0.2, model_slip=0.1)
    print("| setting | π(⌫) after an uncovered error (slip) | after a covered error (noise) | at expert states | "
          "policy TV from the expert |")
    print("|---|---|---|---|---|")
    for name, kw in SETTINGS.items():
        r = report(world, *solve(world, gamma=0.998, **kw) if kw.get("sm_weight") else solve(world, **kw))
        print(f"| {name} | {r['bksp_offdata_model_only']:.3f} | {r['bksp_offdata_noise']:.3f} | "
              f"{r['bksp_clean']:.4f} | {r['tv']:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
