"""Decoding: one generation loop with ``<bksp>`` and a steer hook, and sampling rules.

* :func:`generate` (``decoder.py``): batched, exact backtracking decoder on the KV cache.
* ``steer.py``: the hook protocol (:class:`StepContext`, :class:`Steer`) and every steer rule (:func:`force_action`,
  :class:`BiasAction`, :class:`BanTokens`, :class:`ForceFirst`, :class:`ForcedBackspaces`).
* ``sampling.py``: temperature, top-k, top-p and the draw.

Names are imported lazily so that building the ``seqlevel`` parser does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "generate": "decoder",
    "GenerateOutput": "decoder",
    "check_sampling_options": "sampling",
    "choose_actions": "sampling",
    "filter_scores": "sampling",
    "BanTokens": "steer",
    "BiasAction": "steer",
    "ForceFirst": "steer",
    "ForcedBackspaces": "steer",
    "Steer": "steer",
    "StepContext": "steer",
    "force_action": "steer",
    "context_length": "decoder",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"seqlevel.decoding.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'seqlevel.decoding' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
