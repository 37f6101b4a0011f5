"""Benchmark runners behind ``seqlevel bench NAME``.

Each benchmark is a module exposing:

* ``Config``, a dataclass whose fields (with their docstrings) are the sub-command's options;
* ``run(cfg) -> dict``, the JSON-able result, printing nothing but a progress bar (:mod:`seqlevel.bench.progress`);
* optionally ``QUICK`` (the ``--quick`` preset) and ``format_result(result) -> str`` (the human-readable table).

``seqlevel bench NAME`` (:mod:`seqlevel.commands.bench`) derives its options from ``Config``, calls ``run`` and
prints; ``seqlevel demo`` calls ``run`` with its own configs. The registry maps the sub-command name to its
module, imported only when that benchmark is asked for.
"""

from __future__ import annotations

import importlib
from types import ModuleType

BENCHMARKS: dict[str, tuple[str, str]] = {
    # name: (module, one-line help)
    "speed": ("seqlevel.bench.speed", "time two workloads side by side in one process (ratio A/B)"),
    "key-to-door": ("seqlevel.bench.key_to_door", "CAT-steered vs BC / %BC / random win rate on Key-to-Door"),
    "cat-lm": ("seqlevel.bench.cat_lm", "exact true NLL per token of plain LM (λ=0) vs CAT (λ>0) at three widths"),
    "attribute-estimation": ("seqlevel.bench.attribute_estimation",
                             "CAT one-pass star estimate vs Monte-Carlo rollouts against exact posteriors"),
    "steering": ("seqlevel.bench.steering", "steer the reviews language to each star: control accuracy and true NLL"),
    "markov": ("seqlevel.bench.markov", "MixCE family on the bigram oracle task with known P"),
    "markov-backspace": ("seqlevel.bench.markov_backspace",
                         "MLE vs BC vs SequenceMatch: final-text impossible bigrams of <bksp> models on a known P"),
    "arithmetic": ("seqlevel.bench.arithmetic", "MLE vs BC vs SequenceMatch on add-or-sub-in-base, with recovery"),
    "task": ("seqlevel.bench.task", "any registered task learned by a small LM, its samples scored by the task itself"),
    "memory": ("seqlevel.bench.memory", "peak memory of each loss at 32k/128k vocabularies vs chunked MLE"),
    "gpu": ("seqlevel.bench.gpu", "CUDA: speed cases + bf16 tokens/s and MFU of MLE vs MixCE vs SequenceMatch"),
}


def load(name: str) -> ModuleType:
    """Import the runner module of benchmark ``name``."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {sorted(BENCHMARKS)}")
    return importlib.import_module(BENCHMARKS[name][0])
