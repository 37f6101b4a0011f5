"""``seqlevel bench speed``: time two workloads A and B side by side in one process.

A and B run interleaved (A B A B ...) after a warm-up, so drift in machine load hits both alike. The reported
``ratio_median`` is the median of the per-pair ratios ``a_i / b_i``; a ratio below 1 means A is faster.

The cases live in :mod:`seqlevel.bench.cases` (one registry for speed and memory cases, one module per method
family): a speed factory takes ``(device, quick)`` and returns a :class:`SpeedCase` holding two zero-argument
callables that each do one full unit of work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from seqlevel.bench.cases import SpeedCase, build, names


def build_case(name: str, device: str = "cpu", quick: bool = False) -> SpeedCase:
    """The speed case ``name`` from the registry (:data:`seqlevel.bench.cases.CASES`)."""
    return build(name, "speed", device=device, quick=quick)


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
    p.add_argument("--case", required=True, choices=names("speed"), help="which pair of workloads to time")
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
