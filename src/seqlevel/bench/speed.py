"""``seqlevel bench speed``: time two workloads A and B side by side in one process.

A and B run interleaved (A B A B ...) after a warm-up, so drift in machine load hits both alike. The reported
``ratio_median`` is the median of the per-pair ratios ``a_i / b_i``; a ratio below 1 means A is faster.

The cases live in :mod:`seqlevel.bench.cases` (one registry for speed and memory cases, one module per method
family): a speed factory takes ``(device, quick)`` and returns a :class:`SpeedCase` holding two zero-argument
callables that each do one full unit of work.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from seqlevel.bench.cases import SpeedCase, build, factory, names


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


@dataclass
class Config:
    """Which case to time, and how often."""

    case: str | None = None
    """The pair of workloads to time: one of the registered speed cases (``seqlevel bench speed --help``)."""
    runs: int = 20
    """Timed A/B pairs."""
    warmup: int = 3
    """Untimed A/B pairs first."""
    device: str = "cpu"
    """torch device, e.g. cpu or cuda."""
    quick: bool = False
    """Smaller workload (for tests)."""

    def __post_init__(self):
        if self.case is not None and self.case not in names("speed"):
            raise ValueError(f"--case must be one of {', '.join(names('speed'))}; got {self.case!r}")
        if self.runs < 1 or self.warmup < 0:
            raise ValueError(f"--runs must be >= 1 and --warmup >= 0, got {self.runs} and {self.warmup}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {self.device} asked for, but CUDA is not available; use --device cpu")


def run(cfg: Config) -> dict:
    """Build the case and time it: ``{"case", "ratio_median", "a_median_s", "b_median_s", "runs"}``."""
    if cfg.case is None:
        raise ValueError(f"--case is required: one of {', '.join(names('speed'))}")
    case = build_case(cfg.case, device=cfg.device, quick=cfg.quick)
    return {"case": cfg.case, **measure(case, runs=cfg.runs, warmup=cfg.warmup)}


def format_result(result: dict) -> str:
    """What the case compares (its factory's summary line), the two medians and the ratio."""
    doc = factory(result["case"], "speed").__doc__ or ""
    return (f"case {result['case']}: {doc.strip().splitlines()[0] if doc.strip() else ''}\n  A median {result['a_median_s'] * 1e3:.2f} ms\n"
            f"  B median {result['b_median_s'] * 1e3:.2f} ms\n"
            f"  ratio A/B (median of {result['runs']} pairs): {result['ratio_median']:.3f}")
