"""The ``<bksp>`` action: vocabulary extension, noise augmentation and the single-pass training encoding."""

from seqlevel.backspace.actions import apply_actions
from seqlevel.backspace.encoding import Encoded, collate, encode, model_inputs, model_limits
from seqlevel.backspace.noise import ActionList, augment_with_noise
from seqlevel.backspace.vocab import BACKSPACE_TOKEN, add_backspace_token

__all__ = [
    "BACKSPACE_TOKEN",
    "apply_actions",
    "add_backspace_token",
    "augment_with_noise",
    "ActionList",
    "encode",
    "collate",
    "model_inputs",
    "model_limits",
    "Encoded",
]
