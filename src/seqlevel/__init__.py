"""seqlevel: training and decoding autoregressive sequence models beyond next-token MLE.

Three methods on Hugging Face causal LMs:

* SequenceMatch (Cundy & Ermon, ICLR 2024): imitation learning with a ``<bksp>`` action.
* MixCE (Zhang et al., ACL 2023): mixing forward and reverse cross-entropy.
* Conditional Attribute Transformers (CAT): next-token attribute values in one forward pass.

Submodules are imported lazily so ``import seqlevel`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = ("losses", "backspace", "decoding", "attributes", "trainers", "tasks", "metrics", "bench")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"seqlevel.{name}")
    raise AttributeError(f"module 'seqlevel' has no attribute {name!r}")


__all__ = ["__version__", *_SUBMODULES]
