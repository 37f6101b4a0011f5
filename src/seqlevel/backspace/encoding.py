"""Single-pass training encoding of trajectories with ``<bksp>`` (SequenceMatch §4.3, "Algorithm A").

A trajectory is a prompt plus a list of actions (tokens, ``<bksp>``, finally perhaps ``<eos>``). :func:`encode`
lays it out as ``len(prompt) + len(actions)`` input slots so that ONE forward pass of any causal LM yields, at
every slot, exactly the logits the model would give from scratch on that slot's live state:

* slot ``i`` of a token action holds the token at position ``len(live state) - 1``;
* slot ``i`` of a backspace re-writes the new last live token (input id and position id copied from the slot
  ``j`` it supersedes); ``j`` leaves the live set, so nothing is attended twice;
* row ``i`` of the mask attends exactly the slots that hold the live state (itself included).

Slot ``len(prompt) - 1 + k`` holds the state *before* action ``k``, so its logits score action ``k`` and the next
state always sits at the next slot. Worked example (prompt ``P``; actions ``a b ⌫ c``)::

    slot  input  pos  attends   state     label
    0     P      0    {0}       [P]       a
    1     a      1    {0,1}     [P a]     b
    2     b      2    {0,1,2}   [P a b]   ⌫
    3     a      1    {0,3}     [P a]     c
    4     c      2    {0,3,4}   [P a c]   -

:func:`collate` right-pads a list of encodings into a batch whose ``input_ids``, ``position_ids`` and 4-D additive
``attention_mask`` go straight into ``model(**model_inputs(batch))`` (transformers 5.x passes a 4-D mask through
unchanged, for SDPA and eager attention alike).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

IGNORE = -100
MODEL_INPUT_KEYS = ("input_ids", "position_ids", "attention_mask")


@dataclass
class Encoded:
    """One encoded trajectory; every per-slot field is 1-D of length ``T = len(prompt) + len(actions)``.

    Attributes:
        input_ids: ``(T,)`` long, the token fed at each slot.
        position_ids: ``(T,)`` long, ``len(live state) - 1`` at each slot (not the slot index).
        attention_mask: ``(T, T)`` bool, True where query slot ``i`` may attend key slot ``j``.
        labels: ``(T,)`` long, the action scored by the logits at slot ``t`` (the ``a`` of ``Q(s_t, a)``);
            ``-100`` where there is none. At the absorbing slot (``eos_abs``) it is ``<eos>`` again.
        valid: ``(T,)`` bool, slot ``t`` holds a state in which an action was taken; the next state is slot
            ``t + 1``. False on the absorbing slot (its transitions are summed in closed form by the loss).
        step: ``(T,)`` long, time index ``i`` of the state at slot ``t`` (0 at the last prompt slot).
        eos_abs: ``(T,)`` bool, True only at the last slot when the last action was ``<eos>``.
        is_data: True for a (noise-augmented) data trajectory, False for a model (replay) trajectory.
        eos_id: the ``<eos>`` id used to detect termination, or None.
        prompt_len: number of prompt slots.
        actions: ``(K,)`` long, the actions as given (kept for checks and for replay buffers).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    valid: torch.Tensor
    step: torch.Tensor
    eos_abs: torch.Tensor
    is_data: bool = True
    eos_id: int | None = None
    prompt_len: int = 1
    actions: torch.Tensor | None = None

    def __post_init__(self) -> None:
        T = self.input_ids.shape[0]
        if self.input_ids.dim() != 1:
            raise ValueError(f"input_ids must be 1-D, got shape {tuple(self.input_ids.shape)}")
        if tuple(self.attention_mask.shape) != (T, T):
            raise ValueError(
                f"attention_mask has shape {tuple(self.attention_mask.shape)} but input_ids has length {T}; "
                f"the mask must be ({T}, {T}): build both with encode() rather than by hand"
            )
        for name in ("position_ids", "labels", "valid", "step", "eos_abs"):
            n = getattr(self, name).shape
            if tuple(n) != (T,):
                raise ValueError(f"{name} has shape {tuple(n)} but input_ids has length {T}; they must match")

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def _check_ids(name: str, ids: Sequence[int], vocab_size: int | None) -> None:
    if vocab_size is None:
        return
    bad = [int(t) for t in ids if not 0 <= int(t) < vocab_size]
    if bad:
        raise ValueError(
            f"{name} contains ids outside the model's vocabulary of size {vocab_size}: {bad[:5]}; "
            "call add_backspace_token(model, tokenizer) before encoding, or pass the resized vocab_size"
        )


def encode(
    prompt_ids: Sequence[int],
    action_ids: Sequence[int],
    backspace_id: int,
    *,
    targets: Sequence[int] | None = None,
    eos_id: int | None = None,
    is_data: bool = True,
    vocab_size: int | None = None,
    max_length: int | None = None,
) -> Encoded:
    """Encode one trajectory for a single masked forward pass (SequenceMatch §4.3).

    Args:
        prompt_ids: the prompt, at least one token (``s_0`` must occupy a slot; use ``<bos>`` unconditionally).
            Protected: a backspace when only the prompt is live is a no-op.
        action_ids: ``K`` actions: tokens, ``backspace_id``, and possibly a final ``eos_id``.
        backspace_id: the id of ``<bksp>``.
        targets: ``K`` prediction targets, the action scored in the state before each action. Defaults to
            ``action_ids.targets`` when the actions come from :func:`augment_with_noise`, else to ``action_ids``.
            They differ where noise is environment, not action (§4.2 option A); ``-100`` means "no target".
        eos_id: ``<eos>`` id; when the last action is ``<eos>`` the last slot is the absorbing terminal state.
        is_data: True for data trajectories, False for model (replay-buffer) trajectories.
        vocab_size: the model's (resized) vocabulary size; ids outside it raise a ValueError.
        max_length: the model's context length; longer trajectories raise a ValueError.

    Returns:
        An :class:`Encoded` with ``T = len(prompt_ids) + len(action_ids)`` slots.
    """
    prompt = [int(t) for t in prompt_ids]
    actions = [int(a) for a in action_ids]
    if targets is None:
        targets = getattr(action_ids, "targets", None)
    tgt = actions if targets is None else [int(a) for a in targets]
    m, K = len(prompt), len(actions)
    T = m + K
    if m == 0:
        raise ValueError("prompt_ids is empty; the first state needs a slot, so start from at least one token "
                         "such as <bos>")
    if len(tgt) != K:
        raise ValueError(f"targets has length {len(tgt)} but action_ids has length {K}; give one target per action")
    if vocab_size is not None and not 0 <= backspace_id < vocab_size:
        raise ValueError(
            f"backspace_id {backspace_id} is outside the model's vocabulary of size {vocab_size}; "
            "call add_backspace_token(model, tokenizer) first so the model has a <bksp> row"
        )
    _check_ids("prompt_ids", prompt, vocab_size)
    _check_ids("action_ids", actions, vocab_size)
    _check_ids("targets", [t for t in tgt if t != IGNORE], vocab_size)
    if max_length is not None and T > max_length:
        raise ValueError(
            f"trajectory needs {T} slots (prompt {m} + actions {K}) but the model's context is {max_length}; "
            "cap the number of actions (one slot per action, backspaces included) or shorten the prompt"
        )
    if eos_id is not None and eos_id in actions[:-1]:
        k = actions.index(eos_id)
        raise ValueError(f"action {k} is <eos> (id {eos_id}) but {K - 1 - k} actions follow it; truncate each "
                         "trajectory after its first <eos> (noise from augment_with_noise: pass exclude_ids with "
                         "the <eos>, <pad> and <bos> ids)")

    ids = np.zeros(T, dtype=np.int64)
    pos = np.zeros(T, dtype=np.int64)
    mask = np.zeros((T, T), dtype=bool)
    parent = np.full(T, -1, dtype=np.int64)  # slot below each slot on the live stack
    stack: list[int] = []
    for i, tok in enumerate(prompt):
        ids[i], pos[i] = tok, i
        if stack:
            parent[i] = stack[-1]
            mask[i] = mask[stack[-1]]
        mask[i, i] = True
        stack.append(i)
    for k, a in enumerate(actions):
        i = m + k
        if a == backspace_id:
            if len(stack) > m:  # prompt protected: a backspace at the prompt boundary only re-writes
                stack.pop()
            j = stack.pop()  # the new last live token, re-written at slot i with its own position
            ids[i], pos[i], parent[i] = ids[j], pos[j], parent[j]
        else:
            ids[i], pos[i] = a, len(stack)
            parent[i] = stack[-1]
        if parent[i] >= 0:
            mask[i] = mask[parent[i]]  # live set of i = live set below it + itself
        mask[i, i] = True
        stack.append(i)

    labels = np.full(T, IGNORE, dtype=np.int64)
    labels[m - 1 : T - 1] = tgt
    valid = np.zeros(T, dtype=bool)
    valid[m - 1 : T - 1] = True
    step = np.zeros(T, dtype=np.int64)
    step[m - 1 :] = np.arange(K + 1)
    eos_abs = np.zeros(T, dtype=bool)
    if eos_id is not None and K > 0 and actions[-1] == eos_id:
        eos_abs[T - 1] = True  # absorbing state u_K; its only action is <eos> again (§3.5 option A)
        labels[T - 1] = eos_id
    return Encoded(
        input_ids=torch.from_numpy(ids),
        position_ids=torch.from_numpy(pos),
        attention_mask=torch.from_numpy(mask),
        labels=torch.from_numpy(labels),
        valid=torch.from_numpy(valid),
        step=torch.from_numpy(step),
        eos_abs=torch.from_numpy(eos_abs),
        is_data=bool(is_data),
        eos_id=eos_id,
        prompt_len=m,
        actions=torch.tensor(actions, dtype=torch.long),
    )


def collate(
    encoded_list: Sequence[Encoded],
    pad_id: int,
    *,
    dtype: torch.dtype = torch.float32,
    mask_format: str = "float",
    pad_to_multiple_of: int | None = None,
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad encodings into one batch.

    Args:
        encoded_list: ``B`` encodings (data and model trajectories may be mixed).
        pad_id: input id of padded slots; actions may not contain it (except as the trajectory's own ``<eos>``).
        dtype: dtype of the additive mask; use the model's compute dtype (SDPA wants them to match).
        mask_format: ``"float"`` (default): additive, 0 where allowed and ``finfo(dtype).min`` elsewhere, works for
            SDPA and eager; ``"bool"``: True where allowed, SDPA only.
        pad_to_multiple_of: round ``T`` up to a multiple of this.
        max_length: the model's context; a longer trajectory raises a ValueError.

    Returns:
        A dict with model inputs ``input_ids (B, T)``, ``position_ids (B, T)``, ``attention_mask (B, 1, T, T)``
        (padded slots attend only to themselves, so no row is fully masked) and loss fields ``labels (B, T)``
        (``-100`` on padding), ``valid``, ``eos_abs`` ``(B, T)`` bool, ``step (B, T)`` long, ``is_data (B,)``
        bool, ``lengths (B,)`` long. Feed the model with ``model(**model_inputs(batch))``.
    """
    if not encoded_list:
        raise ValueError("encoded_list is empty; collate needs at least one encoded trajectory")
    if mask_format not in ("float", "bool"):
        raise ValueError(f"mask_format must be 'float' or 'bool', got {mask_format!r}; eager attention needs 'float'")
    lengths = [len(e) for e in encoded_list]
    for b, e in enumerate(encoded_list):
        if not isinstance(e, Encoded):
            raise TypeError(f"item {b} is a {type(e).__name__}, not an Encoded; build it with encode()")
        if max_length is not None and lengths[b] > max_length:
            raise ValueError(f"trajectory {b} has {lengths[b]} slots but the model's context is {max_length}; "
                             "cap the number of actions or shorten the prompt")
    acts = [e.actions for e in encoded_list if e.actions is not None]
    if acts and bool((torch.cat(acts) == pad_id).any()):  # rare: find the row (a final <eos> may share the id)
        _check_pad_actions(encoded_list, pad_id)
    T = max(lengths)
    if pad_to_multiple_of:
        T = -(-T // pad_to_multiple_of) * pad_to_multiple_of
    B = len(encoded_list)
    # collation on tensors: every per-slot field is one cat of the rows + one scatter into its (B, T) tensor
    n = torch.tensor(lengths)
    rows = torch.repeat_interleave(torch.arange(B), n)  # (sum n,)
    cols = torch.arange(int(n.sum())) - torch.repeat_interleave(n.cumsum(0) - n, n)

    def _field(name: str, fill, dtype) -> torch.Tensor:
        out = torch.full((B, T), fill, dtype=dtype)
        out[rows, cols] = torch.cat([getattr(e, name) for e in encoded_list])
        return out

    input_ids = _field("input_ids", pad_id, torch.long)
    position_ids = _field("position_ids", 0, torch.long)
    labels = _field("labels", IGNORE, torch.long)
    valid = _field("valid", False, torch.bool)
    eos_abs = _field("eos_abs", False, torch.bool)
    step = _field("step", 0, torch.long)
    # (B, T, T): each row's mask in its top-left block, scattered like the fields; padded slots attend only to
    # themselves
    blocks = [torch.nn.functional.pad(e.attention_mask, (0, T - k, 0, T - k)) for e, k in zip(encoded_list, lengths)]
    allowed = (torch.stack(blocks) | torch.eye(T, dtype=torch.bool)).unsqueeze(1)  # (B, 1, T, T)
    if mask_format == "float":
        attention_mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    else:
        attention_mask = allowed
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "valid": valid,
        "eos_abs": eos_abs,
        "step": step,
        "is_data": torch.tensor([e.is_data for e in encoded_list], dtype=torch.bool),
        "lengths": torch.tensor(lengths, dtype=torch.long),
    }



def _check_pad_actions(encoded_list: Sequence[Encoded], pad_id: int) -> None:
    """Raise for the first trajectory whose actions use the pad id (a final ``<eos>`` sharing it is allowed)."""
    for b, e in enumerate(encoded_list):
        if e.actions is None:
            continue
        hits = e.actions == pad_id
        if pad_id == e.eos_id and len(e.actions) and bool(e.eos_abs[-1]):
            hits[-1] = False  # a final <eos> that shares the pad id is still an <eos>
        if bool(hits.any()):
            raise ValueError(
                f"trajectory {b} has actions equal to the pad id {pad_id} at action indices "
                f"{hits.nonzero().flatten().tolist()[:5]}; give the tokenizer a dedicated pad token "
                "(e.g. tokenizer.add_special_tokens({'pad_token': '<pad>'})) and pass its id"
            )

def model_inputs(batch: dict[str, torch.Tensor], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """The keys of a :func:`collate` batch that the model takes: ``model(**model_inputs(batch))``.

    The loss fields are left out on purpose: a ``labels`` key would make a Hugging Face model compute its own
    shifted next-token loss, which is wrong for this layout (logits at slot ``t`` already score ``labels[t]``).
    """
    out = {k: batch[k] for k in MODEL_INPUT_KEYS}
    if device is not None:
        out = {k: v.to(device) for k, v in out.items()}
    return out


def model_limits(model) -> tuple[int, int | None]:
    """``(vocab_size, max_length)`` of a Hugging Face causal LM, for ``encode(..., vocab_size=, max_length=)``."""
    vocab_size = model.get_output_embeddings().weight.shape[0]
    cfg = model.config
    max_length = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    return int(vocab_size), (int(max_length) if max_length else None)
