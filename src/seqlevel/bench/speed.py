"""``seqlevel bench speed``: time two workloads A and B side by side in one process.

A and B run interleaved (A B A B ...) after a warm-up, so drift in machine load hits both alike. The reported
``ratio_median`` is the median of the per-pair ratios ``a_i / b_i``; a ratio below 1 means A is faster.

Cases live in ``CASES``: name -> ``"module:factory"``. A factory takes ``(device, quick)`` and returns a
:class:`SpeedCase` holding two zero-argument callables that each do one full unit of work.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

CASES: dict[str, str] = {
    "mixce-vs-mle": "seqlevel.bench.speed_cases:mixce_vs_mle",
    "cat-estimate-vs-forward": "seqlevel.bench.speed_cases_cat:cat_estimate_vs_forward",
    "sm-step-vs-mle": "seqlevel.bench.speed_cases_sm_step:sm_step_vs_mle",
    "decode-vs-hf": "seqlevel.bench.speed_cases_decoding:decode_vs_hf",
    "decode-backspace-vs-recompute": "seqlevel.bench.speed_cases_decoding:decode_backspace_vs_recompute",
    "sm-encoded-vs-mle": "seqlevel.bench.speed_cases_sm:sm_encoded_vs_mle",
}


@dataclass
class SpeedCase:
    """Two workloads to compare. ``a``/``b`` do one unit of work each; ``sync`` waits for the device."""

    a: Callable[[], object]
    b: Callable[[], object]
    a_name: str
    b_name: str
    description: str = ""
    sync: Callable[[], None] = lambda: None


def build_case(name: str, device: str = "cpu", quick: bool = False) -> SpeedCase:
    if name not in CASES:
        raise ValueError(f"unknown speed case {name!r}; choose one of {sorted(CASES)}")
    module, fn = CASES[name].split(":")
    return getattr(importlib.import_module(module), fn)(device=device, quick=quick)


def measure(case: SpeedCase, runs: int = 20, warmup: int = 3) -> dict:
    """Time ``case.a`` and ``case.b`` interleaved; returns medians and the median per-pair ratio."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        case.a()
        case.b()
    case.sync()
    a_times, b_times = [], []
    for i in range(runs):
        # alternate which goes first so neither always benefits from a warm cache
        order = ((case.a, a_times), (case.b, b_times)) if i % 2 == 0 else ((case.b, b_times), (case.a, a_times))
        for fn, sink in order:
            t0 = time.perf_counter()
            fn()
            case.sync()
            sink.append(time.perf_counter() - t0)
    ratios = [a / b for a, b in zip(a_times, b_times)]
    return {
        "ratio_median": statistics.median(ratios),
        "a_median_s": statistics.median(a_times),
        "b_median_s": statistics.median(b_times),
        "runs": runs,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--case", required=True, choices=sorted(CASES), help="which pair of workloads to time")
    p.add_argument("--runs", type=int, default=20, help="timed A/B pairs (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed A/B pairs first (default 3)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--quick", action="store_true", help="smaller workload (for tests)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device} asked for, but CUDA is not available; use --device cpu")
    case = build_case(args.case, device=args.device, quick=args.quick)
    result = {"case": args.case, **measure(case, runs=args.runs, warmup=args.warmup)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"case {args.case}: {case.description}")
        print(f"  A = {case.a_name}: median {result['a_median_s'] * 1e3:.2f} ms")
        print(f"  B = {case.b_name}: median {result['b_median_s'] * 1e3:.2f} ms")
        print(f"  ratio A/B (median of {args.runs} pairs): {result['ratio_median']:.3f}")
    return 0
