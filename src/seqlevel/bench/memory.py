"""``seqlevel bench memory``: peak tensor memory of each loss's forward + backward at large vocabularies.

Peak bytes are counted exactly on any device by :class:`PeakMemory`, a dispatch mode that adds every new
storage's size when an op creates it and subtracts it when the storage is freed. Inputs (hidden states, the
output projection, and whatever a case builds first: a head, a batch's loss fields) exist before measuring, so the
figure is what the loss itself adds. Each loss is compared with the chunked (fused output-projection) MLE at the
same vocabulary: ``ratio = peak / mle_peak``. The losses are the memory cases of :mod:`seqlevel.bench.cases`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from seqlevel.bench.cases import build, names


class PeakMemory(TorchDispatchMode):
    """Counts live tensor-storage bytes created inside the ``with`` block; ``peak`` is the high-water mark."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: dict[int, int] = {}

    def _free(self, key: int, n: int) -> None:
        self._seen.pop(key, None)
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                st = t.untyped_storage()
                key, n = id(st), st.nbytes()
                if n == 0 or key in self._seen:
                    continue
                self._seen[key] = n
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(st, self._free, key, n)
        return out


def peak_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Peak bytes allocated while running ``fn()`` and backpropagating its scalar result."""
    with PeakMemory() as mem:
        fn().backward()
    return mem.peak


def _measure(name: str, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, chunk: int) -> int:
    h.grad = w.grad = None
    loss = build(name, "memory", hidden=h, weight=w, labels=y, chunk=chunk)  # its inputs are built here, unmeasured
    return peak_bytes(loss)


def run_cases(vocab_sizes=(32768, 131072), tokens: int = 1024, hidden: int = 256, chunk: int = 256,
              losses=None, seed: int = 0) -> list[dict]:
    """Measure every loss at every vocabulary size; returns the JSON ``cases`` list."""
    losses = names("memory") if losses is None else losses
    unknown = [n for n in losses if n not in names("memory")]
    if unknown:
        raise ValueError(f"unknown loss {unknown}; choose from {names('memory')}")
    g = torch.Generator().manual_seed(seed)
    cases = []
    for V in vocab_sizes:
        h = torch.randn(2, tokens // 2, hidden, generator=g, requires_grad=True)
        w = (torch.randn(V, hidden, generator=g) * 0.02).requires_grad_(True)
        y = torch.randint(0, V, (2, tokens // 2), generator=g)

        mle = _measure("mle", h, w, y, chunk)
        for name in losses:
            p = mle if name == "mle" else _measure(name, h, w, y, chunk)
            cases.append({"loss": name, "vocab_size": V, "peak_bytes": p, "mle_peak_bytes": mle, "ratio": p / mle})
    return cases


@dataclass
class Config:
    """Which losses at which vocabulary sizes (the defaults are the issue's 32k and 128k)."""

    vocab_sizes: tuple[int, ...] = (32768, 131072)
    """Vocabulary sizes V."""
    tokens: int = 1024
    """Target tokens per batch."""
    hidden: int = 256
    """Hidden width d."""
    chunk: int = 256
    """Tokens per chunk of the chunked losses."""
    losses: tuple[str, ...] | None = None
    """Losses to measure (default all registered memory cases)."""

    def __post_init__(self):
        if not self.vocab_sizes or min(self.vocab_sizes) < 2:
            raise ValueError(f"--vocab-sizes needs sizes >= 2, got {list(self.vocab_sizes)}")
        for name, v in (("--tokens", self.tokens), ("--hidden", self.hidden), ("--chunk", self.chunk)):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")


def run(cfg: Config) -> dict:
    """Peak memory of every loss at every vocabulary size: ``{"cases": [...]}``."""
    return {"cases": run_cases(list(cfg.vocab_sizes), cfg.tokens, cfg.hidden, cfg.chunk,
                               list(cfg.losses) if cfg.losses else None)}


def format_result(result: dict) -> str:
    """Peak MiB of each loss and its ratio to the chunked MLE's."""
    lines = [f"{'loss':<15}{'V':>8}{'peak MiB':>12}{'MLE MiB':>10}{'ratio':>8}"]
    for c in result["cases"]:
        lines.append(f"{c['loss']:<15}{c['vocab_size']:>8}{c['peak_bytes'] / 2**20:>12.1f}"
                     f"{c['mle_peak_bytes'] / 2**20:>10.1f}{c['ratio']:>8.3f}")
    return "\n".join(lines)
