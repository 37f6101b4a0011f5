"""Speed and memory cases of ``seqlevel bench speed`` / ``seqlevel bench memory``: one registry, one module per family.

* :data:`CASES` maps a case name to its kind (``"speed"`` or ``"memory"``) and its factory, ``"module:function"``
  in this package, imported only when the case is built. :func:`build` calls the factory; there are no special
  cases.
* A **speed** factory takes ``(device, quick)`` and returns a :class:`SpeedCase`: two zero-argument callables that
  each do one full unit of work (timed interleaved by :func:`seqlevel.bench.speed.measure`).
* A **memory** factory takes ``(hidden, weight, labels, chunk)`` (hidden states ``(B, T, d)``, output projection
  ``(V, d)``, labels ``(B, T)``, tokens per chunk) and returns a zero-argument callable giving the scalar loss;
  whatever it builds first (a head, a batch's loss fields) is an input, outside the measurement, like the
  projection.
* :func:`device_sync` is the one device-sync helper and :func:`random_tokens` the one batch of plain token ids
  (MLE/MixCE batches, prompts); a method with its own batch layout has its one builder in its family module
  (:func:`seqlevel.bench.cases.sequencematch.synthetic_batch`).

Families: ``mixce.py`` (token-weighted losses: MLE, MixCE, DFT, TaiLr), ``sequencematch.py``, ``attributes.py``
(CAT), ``decoding.py`` (the backtracking decoder).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

KINDS = ("speed", "memory")


class Case(NamedTuple):
    kind: str  # "speed" or "memory"
    factory: str  # "module:function" under seqlevel.bench.cases


# name -> (kind, factory). Memory cases are listed in the order ``seqlevel bench memory`` reports them.
CASES: dict[str, Case] = {
    "mixce-vs-mle": Case("speed", "mixce:mixce_vs_mle"),
    "cat-estimate-vs-forward": Case("speed", "attributes:cat_estimate_vs_forward"),
    "cat-estimate-vs-forward-k5": Case("speed", "attributes:cat_estimate_vs_forward_k5"),
    "sm-step-vs-mle": Case("speed", "sequencematch:sm_step_vs_mle"),
    "decode-vs-hf": Case("speed", "decoding:decode_vs_hf"),
    "decode-backspace-vs-recompute": Case("speed", "decoding:decode_backspace_vs_recompute"),
    "rollout-throughput": Case("speed", "decoding:rollout_throughput"),
    "sm-encoded-vs-mle": Case("speed", "sequencematch:sm_encoded_vs_mle"),
    "mle": Case("memory", "mixce:mle_memory"),
    "mixce": Case("memory", "mixce:mixce_memory"),
    "dft": Case("memory", "mixce:dft_memory"),
    "tailr": Case("memory", "mixce:tailr_memory"),
    "sequencematch": Case("memory", "sequencematch:sequencematch_memory"),
    "attribute": Case("memory", "attributes:attribute_memory"),
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


def names(kind: str) -> list[str]:
    """The case names of one kind, in registry order."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return [n for n, c in CASES.items() if c.kind == kind]


def factory(name: str, kind: str) -> Callable:
    """The factory function of case ``name`` (which must be of ``kind``), imported on first use."""
    if name not in CASES or CASES[name].kind != kind:
        raise ValueError(f"unknown {kind} case {name!r}; choose one of {names(kind)}")
    module, fn = CASES[name].factory.split(":")
    return getattr(importlib.import_module(f"seqlevel.bench.cases.{module}"), fn)


def build(name: str, kind: str, **kwargs):
    """Call the factory of case ``name`` (which must be of ``kind``) with ``kwargs``."""
    return factory(name, kind)(**kwargs)


def device_sync(device: str | torch.device) -> Callable[[], None]:
    """A zero-argument function that waits for ``device``'s queued work (CUDA); a no-op on CPU."""
    return torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)


def random_tokens(B: int, T: int, V: int, *, low: int = 0, high: int | None = None, seed: int = 0) -> torch.Tensor:
    """``(B, T)`` uniform random token ids in ``[low, high)`` (``high`` defaults to ``V``), the same for a seed."""
    return torch.randint(low, V if high is None else high, (B, T), generator=torch.Generator().manual_seed(seed))
