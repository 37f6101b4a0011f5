"""Issue 21's screen: SequenceMatch fine-tunes from one BC checkpoint per seed, at a noise coverage below 1.

One process per seed. BC (ground-truth noise restricted to ``--coverage`` of the forbidden pairs) is trained once
and cached in ``--cache`` (reused by later runs of the same seed and coverage); then every named setting is a
fine-tune of a copy of it, evaluated with the bench's metrics (final-text split rates, token-only NLL, the exact
deletion probe and its curve). One JSON line per run is appended to ``--out`` as soon as it ends.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sm_screen.py --seed 0 --coverage 0.5 \\
        --settings bc_continued,tv,sm_default --out /tmp/screen.jsonl

Settings are named in ``SETTINGS`` below: ``(sm_weight, divergence, overrides of bench Config fields, extra
SequenceMatchConfig fields)``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace

import torch

from seqlevel.bench import markov_backspace as mb

SETTINGS: dict[str, tuple[float, str, dict, dict]] = {
    "bc_continued": (0.0, "chi2_mix", {}, {}),
    "tv": (0.5, "tv", {}, {}),
    "sm_default": (0.5, "chi2_mix", {}, {}),
    "c0.05": (0.5, "chi2_mix", {"chi2_weight": 0.05}, {}),
    "c0.25": (0.5, "chi2_mix", {"chi2_weight": 0.25}, {}),
    "c1": (0.5, "chi2_mix", {"chi2_weight": 1.0}, {}),
    "c0.01_nonorm": (0.5, "chi2_mix", {"occupancy_normalize": False}, {}),
    "c0.01_nonorm_done": (0.5, "chi2_mix", {"occupancy_normalize": False, "eos_handling": "done"}, {}),
    "c0.25_done": (0.5, "chi2_mix", {"chi2_weight": 0.25, "eos_handling": "done"}, {}),
    "c0.25_w0.1": (0.1, "chi2_mix", {"chi2_weight": 0.25}, {}),
    "c0.25_w0.9": (0.9, "chi2_mix", {"chi2_weight": 0.25}, {}),
    "c0.25_temp1.5": (0.5, "chi2_mix", {"chi2_weight": 0.25}, {"rollout_temperature": 1.5}),
    "c0.25_x4": (0.5, "chi2_mix", {"chi2_weight": 0.25, "rollouts_per_refresh": 128, "replay_batch_size": 64,
                                   "replay_buffer_size": 1024}, {}),
    "c0.25_3000": (0.5, "chi2_mix", {"chi2_weight": 0.25, "finetune_steps": 3000}, {}),
    "bc_continued_3000": (0.0, "chi2_mix", {"finetune_steps": 3000}, {}),
    "tv_3000": (0.5, "tv", {"finetune_steps": 3000}, {}),
    # eos="absorbing_eos": the absorbing state's value is its <eos> logit (the fix of issue 21, item 0)
    "ae_c0.01": (0.5, "chi2_mix", {"eos_handling": "absorbing_eos"}, {}),
    "ae_c0.25": (0.5, "chi2_mix", {"eos_handling": "absorbing_eos", "chi2_weight": 0.25}, {}),
    "ae_c1": (0.5, "chi2_mix", {"eos_handling": "absorbing_eos", "chi2_weight": 1.0}, {}),
    "ae_c1_w0.9": (0.9, "chi2_mix", {"eos_handling": "absorbing_eos", "chi2_weight": 1.0}, {}),
    "ae_c0.25_temp1.5": (0.5, "chi2_mix", {"eos_handling": "absorbing_eos", "chi2_weight": 0.25},
                         {"rollout_temperature": 1.5}),
    "ae_c0.01_nonorm": (0.5, "chi2_mix", {"eos_handling": "absorbing_eos", "occupancy_normalize": False}, {}),
    "ae_c0.05_nonorm": (0.5, "chi2_mix", {"eos_handling": "absorbing_eos", "occupancy_normalize": False,
                                          "chi2_weight": 0.05}, {}),
    "ae_tv": (0.5, "tv", {"eos_handling": "absorbing_eos"}, {}),
    "ae_c0.01_3000": (0.5, "chi2_mix", {"eos_handling": "absorbing_eos", "finetune_steps": 3000}, {}),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--coverage", type=float, default=0.5)
    ap.add_argument("--settings", default="bc_continued,tv,sm_default")
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "seqlevel-sm-screen"))
    ap.add_argument("--save-models", action="store_true", help="keep each fine-tuned model in --cache")
    args = ap.parse_args(argv)
    names = [s for s in args.settings.split(",") if s]
    bad = [s for s in names if s not in SETTINGS and not s.startswith("custom:")]
    if bad:
        ap.error(f"unknown settings {bad}; choose from {sorted(SETTINGS)}")
    torch.set_num_threads(1)
    cfg = replace(mb.Config(), seeds=(args.seed,), noise_coverage=args.coverage)
    w = mb.world(cfg, args.seed)
    bc_dir = os.path.join(args.cache, f"bc_seed{args.seed}_cov{args.coverage}")
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        if os.path.exists(os.path.join(bc_dir, "config.json")):
            bc_model = AutoModelForCausalLM.from_pretrained(bc_dir)
            bc_row = None
        else:
            t, curve, probe_curve, s = mb.pretrain(cfg, w, "bc", tmp)
            bc_model = t.model
            t.save_model(bc_dir)
            bc_row = {"setting": "bc", "seed": args.seed, "coverage": args.coverage, **mb.evaluate(cfg, w, t),
                      "seconds": s, "curve": curve, "probe_curve": probe_curve}
        _write(args.out, bc_row)
        for name in names:
            if name.startswith("custom:"):  # custom:NAME:JSON of {"sm_weight", "divergence", "overrides", "extra"}
                _, label, spec = name.split(":", 2)
                d = json.loads(spec)
                sm_w, div, ov, ex = d.get("sm_weight", 0.5), d.get("divergence", "chi2_mix"), d.get("overrides", {}), \
                    d.get("extra", {})
            else:
                label, (sm_w, div, ov, ex) = name, SETTINGS[name]
            t0 = time.time()
            t, curve, probe_curve, s = mb.finetune(cfg, w, bc_model, f"{tmp}/{label}", sm_weight=sm_w, divergence=div,
                                                   extra=ex, overrides=ov)
            row = {"setting": label, "seed": args.seed, "coverage": args.coverage, "sm_weight": sm_w,
                   "divergence": div, "overrides": ov, "extra": ex, **mb.evaluate(replace(cfg, **ov), w, t),
                   "seconds": s, "curve": curve, "probe_curve": probe_curve, "wall": time.time() - t0}
            if args.save_models:
                t.save_model(os.path.join(args.cache, f"{label}_seed{args.seed}_cov{args.coverage}"))
            _write(args.out, row)
    return 0


def _write(path: str, row: dict | None) -> None:
    if row is None:
        return
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
    def f(k):
        return "-" if row[k] is None else f"{row[k]:.3f}"

    print(f"{row['setting']}: unc {row['uncovered_rate']:.5f} cov {row['covered_rate']:.5f} "
          f"p_unc {f('p_bksp_uncovered')} p_cov {f('p_bksp_covered')} p_valid {f('p_bksp_valid')} "
          f"nll {row['token_nll']:.4f}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
