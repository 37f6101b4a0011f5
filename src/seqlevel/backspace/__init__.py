"""The ``<bksp>`` action: vocabulary extension, noise augmentation and the single-pass training encoding."""

from seqlevel.backspace.actions import apply_actions

__all__ = ["apply_actions"]
