"""Decoding: one generation loop with ``<bksp>`` and a steer hook, sampling rules, and the CLI entry point."""

from seqlevel.decoding.generate import GenerateOutput, generate
from seqlevel.decoding.sampling import check_sampling_options, choose_actions, filter_scores
from seqlevel.decoding.steer import BiasAction, Steer, StepContext, force_action

__all__ = [
    "BiasAction",
    "GenerateOutput",
    "Steer",
    "StepContext",
    "check_sampling_options",
    "choose_actions",
    "filter_scores",
    "force_action",
    "generate",
]
