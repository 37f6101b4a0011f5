"""Batched decoding with a ``<bksp>`` action, on the KV cache, exact.

Hugging Face ``generate`` cannot do this: ``DynamicCache.crop`` trims every row of a batch to the same length and a
``LogitsProcessor`` cannot delete tokens. This loop keeps one append-only cache for the whole batch and gives
every action of every row one new cache *slot*, the same encoding the single-pass SequenceMatch training uses
(SequenceMatch notes §4.3, worked example there):

* **token** ``a``: slot holds ``a`` at position id ``L`` (the live length); it joins the live state.
* **``<bksp>``**: the last live token's slot gets an attention-mask hole (it is deleted). The new last live token
  ``x`` (slot ``j``) is *re-fed* in the new slot at its original position id, and slot ``j`` gets a hole too: the
  new slot supersedes it. By induction over layers the new slot has the same input, position and attended keys as
  ``j``, so its keys/values and its logits are exactly those of the state after the deletion, i.e. the
  distribution ``π(·| s[:-1])`` comes out of the ordinary one-token forward. No per-row logits stack is kept
  (it would cost ``B·T·V`` memory) and hidden states for the steer hook come for free.
* **backspace at the prompt boundary is a no-op**: the prompt is protected (as in
  :func:`seqlevel.backspace.apply_actions`); the last prompt token is re-fed and the state is unchanged.
* **finished rows** feed their last token into a slot that is a hole, so the batch stays rectangular.

Position ids are always the live length, so they go *down* after a backspace (SequenceMatch notes §4.4.3). The
2-D attention mask covers every slot (cache length + 1) and carries the holes; for sdpa and eager the mask is
applied per key, so a hole is the same as the key not being there. The cost of a backspace is one ordinary
one-token step; the price of the scheme is that deleted tokens stay in the cache as holes (the cache holds
``prompt width + actions`` slots). Causal masking in transformers 5.x is by slot index and the padding mask by
key, which is what this needs; sliding-window and flash-attention (varlen) layers are not supported.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer

from seqlevel.decoding.sampling import check_sampling_options, choose_actions
from seqlevel.decoding.steer import Steer, StepContext


@dataclass
class GenerateOutput:
    """What :func:`generate` returns, row by row in the input batch order.

    Attributes:
        actions: every action each row took, ``<bksp>`` and ``<eos>`` included.
        sequences: each row's final generated tokens after applying the backspaces, prompt excluded
            (``apply_actions(prompts[i], actions[i], backspace_id)[len(prompts[i]):]``; ends with ``<eos>`` when
            the row finished).
        prompts: each row's prompt without padding.
        num_actions: ``(B,)`` number of actions taken.
        num_backspaces: ``(B,)`` number of ``<bksp>`` actions (no-op ones at the prompt boundary included).
        finished: ``(B,)`` bool, True where the row ended with ``<eos>``.
        stop_reasons: per row ``"eos"``, ``"max_new_actions"``, ``"max_new_tokens"`` or ``"context"``.
    """

    actions: list[list[int]]
    sequences: list[list[int]]
    prompts: list[list[int]]
    num_actions: torch.Tensor
    num_backspaces: torch.Tensor
    finished: torch.Tensor
    stop_reasons: list[str] = field(default_factory=list)


_EOS, _MAX_ACTIONS, _MAX_NEW_TOKENS, _CONTEXT = 1, 2, 3, 4
_REASONS = {_EOS: "eos", _MAX_ACTIONS: "max_new_actions", _MAX_NEW_TOKENS: "max_new_tokens", _CONTEXT: "context"}


def context_length(model: PreTrainedModel) -> int | None:
    """The model's number of positions (``max_position_embeddings`` / ``n_positions``), ``None`` if unbounded."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


def _vocab_size(model: PreTrainedModel) -> int:
    head = model.get_output_embeddings()
    if head is not None and hasattr(head, "weight"):
        return int(head.weight.shape[0])
    return int(model.config.get_text_config().vocab_size)


def _check_inputs(model, input_ids, attention_mask, max_new_actions, max_new_tokens, eos_ids, backspace_id):
    if max_new_actions <= 0:
        raise ValueError(f"max_new_actions must be >= 1, got {max_new_actions}; it caps the number of actions "
                         "(tokens, <eos> and <bksp>) each row may take")
    if max_new_tokens is not None and max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be >= 1 or None, got {max_new_tokens}; it caps the live length")
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
    if input_ids.dtype not in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}; pass the ids the "
                         "tokenizer returned (return_tensors='pt'), or convert with input_ids.long()")
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} does not match input_ids shape "
                         f"{tuple(input_ids.shape)}; pass the mask the tokenizer returned with these ids")
    V = _vocab_size(model)
    bad_eos = [e for e in eos_ids if not 0 <= e < V]
    if bad_eos:
        raise ValueError(f"eos_token_id {bad_eos[0]} is outside the model's vocabulary [0, {V}), so no row could "
                         "ever end with it; pass the tokenizer's eos_token_id (or None to never stop early)")
    real = input_ids[attention_mask.bool()]  # padding may hold any id
    if real.numel() and not (0 <= int(real.min()) and int(real.max()) < V):
        bad = int(real.max()) if int(real.max()) >= V else int(real.min())
        raise ValueError(f"input_ids hold id {bad}, outside the model's vocabulary [0, {V}); encode the prompts "
                         "with the tokenizer the model was trained with")
    if backspace_id is not None and not 0 <= backspace_id < V:
        raise ValueError(f"backspace_id {backspace_id} is outside the model's vocabulary [0, {V}); add the "
                         "<bksp> token to the tokenizer and resize the embeddings first")
    if backspace_id is not None and backspace_id in eos_ids:
        raise ValueError(f"backspace_id {backspace_id} is also an eos_token_id; they must differ")
    prompt_lengths = attention_mask.sum(dim=1)
    if bool((prompt_lengths == 0).any()):
        raise ValueError("a prompt is empty (all padding); every row needs at least one token, e.g. <bos>")
    ctx = context_length(model)
    if ctx is not None and int(prompt_lengths.max()) > ctx:
        raise ValueError(f"a prompt has {int(prompt_lengths.max())} tokens but the model's context is {ctx}; "
                         "truncate the prompt (keep its last tokens)")
    return prompt_lengths, ctx


def _as_eos_ids(eos_token_id: int | Sequence[int] | None) -> tuple[int, ...]:
    if eos_token_id is None:
        return ()
    if isinstance(eos_token_id, int):
        return (eos_token_id,)
    return tuple(int(e) for e in eos_token_id)


def _inference_mode(fn):
    """Run ``fn`` under ``torch.inference_mode`` (no autograd bookkeeping at all, a few % of a step on CPU over
    ``no_grad``; same kernels, same actions). The tensors of its :class:`GenerateOutput` are cloned outside the
    mode, so callers may use them as ordinary tensors (update them in place, keep them for autograd)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.inference_mode():
            out = fn(*args, **kwargs)
        for name in ("num_actions", "num_backspaces", "finished"):
            setattr(out, name, getattr(out, name).clone())
        return out
    return wrapper


@_inference_mode
def generate(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_actions: int,
    eos_token_id: int | Sequence[int] | None,
    backspace_id: int | None = None,
    max_new_tokens: int | None = None,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    steer: Steer | None = None,
    output_hidden_states: bool = False,
    suppress_ids: Sequence[int] = (),
) -> GenerateOutput:
    """Generate from a causal LM whose action space may include ``<bksp>``; rows backspace independently.

    Args:
        model: any Hugging Face causal LM with a KV cache and ``position_ids`` (GPT-2, Llama, ...).
        input_ids: ``(B, W)`` prompts, left- or right-padded (or ``(W,)`` for one prompt).
        attention_mask: ``(B, W)`` 1 for prompt tokens, 0 for padding; default all ones.
        max_new_actions: cap on actions per row (tokens, ``<eos>`` and ``<bksp>`` all count).
        eos_token_id: id (or ids) that end a row; ``None`` never ends early.
        backspace_id: id of ``<bksp>``; ``None`` decodes without backspace (then the result equals Hugging Face
            ``generate``). A backspace at the prompt boundary is a no-op: the prompt is never deleted.
        max_new_tokens: optional cap on the live generated length; a row that reaches it stops. Rows also stop
            when the live length reaches the model's context.
        do_sample: sample (True) or take the argmax (False; temperature/top-k/top-p are then ignored).
        temperature, top_k, top_p: sampling rules, applied after ``steer`` (see :mod:`.sampling`).
        seed: seeds the sampling stream, so the same call returns the same actions.
        steer: hook ``steer(scores, ctx) -> scores | None`` called each step on the live rows (see :mod:`.steer`).
        output_hidden_states: give the steer hook hidden states even if it does not set ``needs_hidden_states``.
        suppress_ids: ids that are never an action (e.g. ``<pad>``, ``<unk>``): their scores are ``-inf`` before
            the steer hook and the sampling rule. An id that is also an ``eos_token_id`` or ``backspace_id`` is
            kept (GPT-2 pads with ``<eos>``).

    Returns:
        :class:`GenerateOutput` with per-row actions, final sequences and counts.
    """
    check_sampling_options(do_sample, temperature, top_k, top_p)
    if input_ids.ndim == 1:
        input_ids = input_ids[None]
        attention_mask = None if attention_mask is None else attention_mask[None]
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    eos_ids = _as_eos_ids(eos_token_id)
    suppress = sorted({int(i) for i in suppress_ids if i is not None} - set(eos_ids) - {backspace_id})
    prompt_len, ctx_len = _check_inputs(model, input_ids, attention_mask, max_new_actions, max_new_tokens,
                                        eos_ids, backspace_id)
    device = next(model.parameters()).device
    mask_dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device).long()
    prompt_len = prompt_len.to(device)
    need_hidden = output_hidden_states or bool(getattr(steer, "needs_hidden_states", False))
    generator = None
    if do_sample and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)

    B, W = input_ids.shape
    N = max_new_actions
    rows = torch.arange(B, device=device)
    # Live state of each row, indexed by position: its token and the cache slot holding it.
    P = int(prompt_len.max())
    live_tok = torch.zeros(B, P + N + 1, dtype=torch.long, device=device)  # (B, P+N+1); last column = bin
    live_slot = torch.zeros(B, P + N + 1, dtype=torch.long, device=device)
    prompt_pos = attention_mask.cumsum(dim=1) - 1  # (B, W): position id of each prompt token
    put = torch.where(attention_mask.bool(), prompt_pos, P + N)  # padding goes to the bin column
    live_tok.scatter_(1, put, input_ids)
    live_slot.scatter_(1, put, torch.arange(W, device=device).expand(B, W))
    L = prompt_len.clone()  # (B,) live lengths
    # a row stops when its live length reaches its cap: max_new_tokens, or the model's context
    no_cap = torch.iinfo(torch.long).max // 2
    cap = prompt_len + (max_new_tokens if max_new_tokens is not None else no_cap)
    cap_reason = torch.full_like(cap, _MAX_NEW_TOKENS)
    if ctx_len is not None:
        cap_reason = torch.where(cap > ctx_len, _CONTEXT, cap_reason)
        cap = cap.clamp(max=ctx_len)
    eos_t = torch.tensor(eos_ids, dtype=torch.long, device=device)

    mask = torch.zeros(B, W + N, dtype=torch.long, device=device)  # (B, slots): 2-D mask with holes
    mask[:, :W] = attention_mask
    actions = torch.full((B, N), -1, dtype=torch.long, device=device)
    reason = torch.zeros(B, dtype=torch.long, device=device)  # index into _REASONS
    n_bksp = torch.zeros(B, dtype=torch.long, device=device)

    # Prefill: one forward of the padded prompts; next-action logits at each row's last prompt token.
    cache = preallocated_cache(W + N)  # every step appends exactly one slot: W + N slots in all
    last_col = live_slot[rows, L - 1]  # (B,)
    keep = 1 if bool((last_col == W - 1).all()) else last_col[:, None]
    out = model(input_ids=input_ids, attention_mask=mask[:, :W], position_ids=prompt_pos.clamp(min=0),
                cache=cache, use_cache=True, output_hidden_states=need_hidden, logits_to_keep=keep)
    logits = out.logits[:, -1].float()  # (B, V)
    hidden = None
    if need_hidden:
        hidden = tuple(h[rows, last_col] for h in out.hidden_states)  # each (B, H)

    done = L >= cap  # (B,) rows that take no more actions
    reason = torch.where(done, cap_reason, reason)
    for step in range(N):
        if bool(done.all()):
            break
        scores = logits
        if suppress:
            scores[:, suppress] = float("-inf")  # logits is this step's own float copy: safe to write
        if steer is not None:
            scores = _apply_steer(steer, scores, step, done, L, prompt_len, live_tok, hidden, backspace_id, eos_ids)
        action = choose_actions(scores, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                                generator=generator)  # (B,)
        active = ~done
        actions[:, step] = torch.where(active, action, -1)
        is_bk = active & (action == backspace_id) if backspace_id is not None else torch.zeros_like(active)
        is_tok = active & ~is_bk
        n_bksp += is_bk.long()

        # <bksp>: the last live token becomes a hole (unless only the prompt is live: no-op)
        drop = is_bk & (L > prompt_len)
        mask[rows, live_slot[rows, L - 1]] *= (~drop).long()
        L = L - drop.long()
        # this step's slot: a token at position L, or a re-fed copy of the (new) last live token at L - 1
        slot = W + step
        write_at = torch.where(is_tok, L, L - 1)  # (B,) position id of the new slot
        feed = torch.where(is_tok, action, live_tok[rows, L - 1])  # (B,)
        mask[rows, live_slot[rows, L - 1]] *= (~is_bk).long()  # the re-fed copy supersedes the old slot
        mask[:, slot] = (is_tok | is_bk).long()  # finished rows feed into a hole
        live_tok[rows, write_at] = feed
        live_slot[rows, write_at] = torch.where(active, slot, live_slot[rows, write_at])
        L = L + is_tok.long()

        ended = is_tok & torch.isin(action, eos_t)
        capped = active & ~ended & (L >= cap)
        reason = torch.where(ended, _EOS, torch.where(capped, cap_reason, reason))
        done = done | ended | capped
        if step == N - 1 or bool(done.all()):
            break
        out = model(input_ids=feed[:, None], attention_mask=_additive_mask(mask[:, : slot + 1], mask_dtype),
                    position_ids=write_at[:, None], cache=cache, use_cache=True, output_hidden_states=need_hidden)
        logits = out.logits[:, -1].float()  # (B, V)
        if need_hidden:
            hidden = tuple(h[:, -1] for h in out.hidden_states)

    reason = torch.where(done, reason, _MAX_ACTIONS)
    return _collect(input_ids, attention_mask, prompt_len, L, live_tok, actions, n_bksp, reason)


class PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` that writes new keys and values into a buffer of ``capacity`` slots and returns views of the
    filled part, instead of concatenating a new tensor at every step (on CPU the ``cat`` of a 16 x 160-slot cache
    was ~12% of a decoding step). Same values in the same order as ``DynamicLayer``, so the same logits."""

    def __init__(self, capacity: int, **kwargs):
        super().__init__(**kwargs)
        self.capacity = capacity
        self._filled = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n, m = self._filled, key_states.shape[-2]
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            shape = (*key_states.shape[:-2], max(self.capacity, m), key_states.shape[-1])
            self._k = key_states.new_empty(shape)
            self._v = value_states.new_empty((*shape[:-1], value_states.shape[-1]))
        if n + m > self._k.shape[-2]:  # more slots than announced: fall back to growing (still correct)
            return super().update(key_states, value_states, *args, **kwargs)
        self._k[..., n:n + m, :].copy_(key_states)
        self._v[..., n:n + m, :].copy_(value_states)
        self._filled = n + m
        self.keys, self.values = self._k[..., : n + m, :], self._v[..., : n + m, :]
        return self.keys, self.values


def preallocated_cache(capacity: int) -> DynamicCache:
    """A ``DynamicCache`` whose layers (:class:`PreallocatedLayer`) hold ``capacity`` slots from the start."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = functools.partial(PreallocatedLayer, capacity)
    return cache


def _additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(B, S)`` 0/1 slot mask -> ``(B, 1, 1, S)`` additive mask (0 or ``finfo.min``) for a one-token step.

    Transformers 5.x passes a 4-D mask to SDPA and eager attention unchanged, so this skips rebuilding it from the
    2-D mask (with holes, the library cannot take its no-mask shortcut) at every step.
    """
    return torch.zeros(mask.shape[0], 1, 1, mask.shape[1], dtype=dtype, device=mask.device).masked_fill_(
        mask[:, None, None, :] == 0, torch.finfo(dtype).min)


def _apply_steer(steer, scores, step, done, L, prompt_len, live_tok, hidden, backspace_id, eos_ids):
    """Call the hook on the live rows only and write its scores back (no gather/scatter while every row is live)."""
    all_live = not bool(done.any())
    if all_live:  # views, no copies: the common case while no row has finished
        live_rows, pick = torch.arange(done.shape[0], device=done.device), slice(None)
    else:
        live_rows = (~done).nonzero().squeeze(1)  # (R,)
        pick = live_rows
    lengths = L[pick]
    ctx = StepContext(
        step=step,
        rows=live_rows,
        live_lengths=lengths,
        prompt_lengths=prompt_len[pick],
        tokens=live_tok[pick, : int(lengths.max())],
        hidden_states=None if hidden is None else tuple(h[pick] for h in hidden),
        backspace_id=backspace_id,
        eos_token_ids=eos_ids,
    )
    new = steer(scores[pick], ctx)
    if new is None:
        return scores
    if new.shape != (len(live_rows), scores.shape[1]):
        raise ValueError(f"steer returned scores of shape {tuple(new.shape)}; expected "
                         f"{(len(live_rows), scores.shape[1])} (one row per ctx.rows entry, full vocabulary)")
    if all_live:
        return new.to(scores.dtype)
    scores = scores.clone()
    scores[live_rows] = new.to(scores.dtype)
    return scores


def _collect(input_ids, attention_mask, prompt_len, L, live_tok, actions, n_bksp, reason) -> GenerateOutput:
    """Turn the loop's tensors into per-row lists (one ``tolist`` each, no per-step Python work)."""
    n_actions = (actions >= 0).sum(dim=1)
    acts, toks = actions.tolist(), live_tok.tolist()
    plen, live = prompt_len.tolist(), L.tolist()
    ids, am = input_ids.tolist(), attention_mask.tolist()
    return GenerateOutput(
        actions=[a[:n] for a, n in zip(acts, n_actions.tolist())],
        sequences=[t[p:n] for t, p, n in zip(toks, plen, live)],
        prompts=[[x for x, m in zip(r, mr) if m] for r, mr in zip(ids, am)],
        num_actions=n_actions.cpu(),
        num_backspaces=n_bksp.cpu(),
        finished=(reason == _EOS).cpu(),
        stop_reasons=[_REASONS[r] for r in reason.tolist()],
    )
