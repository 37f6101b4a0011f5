"""Applying a sequence of actions, some of them ``<bksp>``, to a prompt.

The action space is the vocabulary plus ``<bksp>`` (SequenceMatch §4.1). A backspace deletes the last live
token; the prompt is protected, so a backspace when only the prompt is live is a no-op. Both the single-pass
training encoding and the backtracking decoder follow this rule, so a trajectory means the same thing to both.
"""

from __future__ import annotations

from collections.abc import Sequence


def apply_actions(prompt_ids: Sequence[int], action_ids: Sequence[int], backspace_id: int) -> list[int]:
    """The final sequence after applying ``action_ids`` to ``prompt_ids``.

    Args:
        prompt_ids: the prompt (may be empty); never deleted.
        action_ids: tokens and backspaces, in order.
        backspace_id: the id of ``<bksp>``.

    Returns:
        ``prompt + kept tokens`` as a list of ints.

    Example:
        >>> apply_actions([1, 2], [5, 6, 9, 7, 9, 9, 9], backspace_id=9)
        [1, 2]
    """
    live = [int(t) for t in prompt_ids]
    floor = len(live)
    for a in action_ids:
        a = int(a)
        if a == backspace_id:
            if len(live) > floor:  # backspace at the prompt boundary is a no-op
                live.pop()
        else:
            live.append(a)
    return live
