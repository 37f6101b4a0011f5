"""Shared-prefix forward: run the rows' common prompt prefix once, then the rest of every row on its KV cache.

In many tasks every prompt starts with the same tokens (arithmetic: ``"<bos>In base "``). When the first ``L``
slots of every row of a :func:`seqlevel.backspace.collate` batch hold the same token ids at positions ``0..L-1``
under a plain causal mask, a causal LM's hidden states (so keys and values) at those slots are the same in every
row. :func:`shared_prefix_forward` runs the model on that prefix once (batch 1, with a cache), expands the cache's
keys and values to all ``B`` rows (a view, no copy) and runs the remaining ``T − L`` slots of every row with the
cache and the matching rows of the 4-D mask. Autograd sums the prefix's gradients over the rows through the
expand, so the loss and the gradients equal the plain ``(B, T)`` forward's up to float rounding (a different
summation order, not different math; tests/trainers/test_prefix.py).

The prefix ends before the first slot whose logits any loss term reads (``valid``, ``eos_abs`` or a label), so
the shared part only feeds the other slots through attention; its own logits are still computed (batch 1) and
expanded, so the returned ``(B, T, A)`` logits cover every slot as the plain forward's do.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import DynamicCache, DynamicLayer

from seqlevel.backspace.encoding import IGNORE

# attention implementations that take a ready 4-D mask together with a cache (transformers 5.x masking_utils
# returns a 4-D mask as is); flash-attention kernels take no arbitrary mask
PREFIX_ATTENTION = ("sdpa", "eager")
_FUNCTIONAL_DROPOUT = ("attention_dropout", "attn_dropout", "dropout", "dropout_p", "dropout_rate")


def _has_dropout(model: torch.nn.Module) -> bool:
    """True if any dropout the model runs is above 0: an ``nn.Dropout`` module, or a float probability a module
    hands to its attention kernel itself (Llama-style ``self.attention_dropout``; GPT-2 reads its module's ``p``).

    Config fields are not read: they also name dropouts of heads the model does not have (GPT-2's
    ``summary_first_dropout`` belongs to the double-heads model).
    """
    for m in model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0:
            return True
        for name in _FUNCTIONAL_DROPOUT:
            p = getattr(m, name, None)
            if isinstance(p, float) and p > 0:
                return True
    return False


def prefix_skip_reason(model: torch.nn.Module, *, gradient_checkpointing: bool = False,
                       world_size: int = 1) -> str | None:
    """Why the shared-prefix forward cannot be used with ``model`` (None when it can).

    Skipped for anything but a bare ``PreTrainedModel`` (PEFT, DDP, FSDP or compiled wrappers), a model split over
    devices (``hf_device_map``), adapters loaded through transformers' PEFT integration, more than one process,
    gradient checkpointing, an attention implementation outside :data:`PREFIX_ATTENTION`, and a model in training
    mode with any dropout probability above 0 (a shared prefix would share one dropout mask among the rows).
    """
    if not isinstance(model, PreTrainedModel):
        return f"the model is a {type(model).__name__}, not a bare PreTrainedModel"
    if world_size > 1:
        return f"{world_size} processes"
    if getattr(model, "hf_device_map", None) is not None or getattr(model, "_hf_peft_config_loaded", False):
        return "the model is split over devices or has PEFT adapters"
    checkpointing = "is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing") else \
        "is_gradient_checkpointing"  # transformers 5.x renamed it
    if gradient_checkpointing or getattr(model, checkpointing, False):
        return "gradient checkpointing"
    attn = getattr(model.config, "_attn_implementation", None)
    if attn not in PREFIX_ATTENTION:
        return f"attention implementation {attn!r} (needs one of {PREFIX_ATTENTION})"
    if model.training and _has_dropout(model):
        return "dropout is active (the rows would share one dropout mask on the prefix)"
    return None


def shared_prefix_length(batch: dict[str, torch.Tensor]) -> int:
    """Length ``L`` of the longest prefix the rows of a :func:`seqlevel.backspace.collate` batch share exactly.

    Slot ``i < L`` holds the same input id in every row, position ``i``, and attends exactly slots ``0..i``; and
    ``L`` is at most the first slot whose logits a loss reads (``valid``, ``eos_abs`` or a label other than
    ``-100``) in any row, so every loss term reads only slots ``>= L``.

    Args:
        batch: ``input_ids``, ``position_ids`` ``(B, T)``, ``attention_mask`` ``(B, 1, T, T)`` (bool, True =
            attend, or additive float, 0 = attend), ``valid``, ``eos_abs``, ``labels`` ``(B, T)``.

    Returns:
        ``L`` in ``[0, T]``.
    """
    ids, pos = batch["input_ids"], batch["position_ids"]
    B, T = ids.shape
    read = batch["valid"] | batch["eos_abs"] | (batch["labels"] != IGNORE)  # (B, T): slots a loss reads
    first_read = torch.where(read.any(1), read.float().argmax(1), torch.full((B,), T)).min()
    n = int(first_read)
    if n == 0:
        return 0
    mask = batch["attention_mask"][:, 0, :n]  # (B, n, T): the candidate prefix's query rows
    allowed = mask if mask.dtype == torch.bool else mask == 0
    causal = torch.ones(n, T, dtype=torch.bool).tril()  # row i attends 0..i, nothing after
    ok = (ids[:, :n] == ids[:1, :n]).all(0)  # (n,)
    ok &= (pos[:, :n] == torch.arange(n, device=pos.device)).all(0)
    ok &= (allowed == causal.to(allowed.device)).all(2).all(0)
    return int(ok.long().cumprod(0).sum())


def shared_prefix_forward(model: PreTrainedModel, inputs: dict[str, torch.Tensor], prefix_len: int) -> torch.Tensor:
    """``model(**inputs).logits`` computed with the first ``prefix_len`` slots run once for all rows.

    Args:
        model: a bare causal LM for which :func:`prefix_skip_reason` is None.
        inputs: ``input_ids``, ``position_ids`` ``(B, T)`` and ``attention_mask`` ``(B, 1, T, T)`` (the output of
            :func:`seqlevel.backspace.model_inputs`), whose first ``prefix_len`` slots are shared as
            :func:`shared_prefix_length` checks.
        prefix_len: ``L``, with ``1 <= L < T``.

    Returns:
        Logits ``(B, T, A)``, equal to the plain forward's up to float rounding; slots ``< L`` are the one prefix
        row's logits expanded.

    Raises:
        ValueError: ``prefix_len`` outside ``[1, T)``, or a model whose cache is not a plain ``DynamicCache``
            (sliding-window or other layers), which :func:`prefix_skip_reason` does not catch.
    """
    ids, pos, mask = inputs["input_ids"], inputs["position_ids"], inputs["attention_mask"]
    B, T = ids.shape
    L = int(prefix_len)
    if not 1 <= L < T:
        raise ValueError(f"prefix_len must be in [1, {T}) for a batch of {T} slots, got {L}")
    head = model(input_ids=ids[:1, :L], position_ids=pos[:1, :L], attention_mask=mask[:1, :, :L, :L],
                 use_cache=True)  # (1, L, A)
    cache = head.cache
    if type(cache) is not DynamicCache or any(type(layer) is not DynamicLayer for layer in cache.layers):
        raise ValueError(f"shared_prefix_forward needs a DynamicCache of plain DynamicLayers, got "
                         f"{type(cache).__name__}; set share_prompt_prefix=False for this model")
    for layer in cache.layers:  # (1, H, L, D) -> (B, H, L, D) views; the rest's cat copies them once per layer
        layer.keys = layer.keys.expand(B, -1, -1, -1)
        layer.values = layer.values.expand(B, -1, -1, -1)
    tail = model(input_ids=ids[:, L:], position_ids=pos[:, L:], attention_mask=mask[:, :, L:, :], cache=cache,
                 use_cache=True)  # (B, T - L, A); mask rows L.. over all T key slots (cache first)
    return torch.cat([head.logits.expand(B, -1, -1), tail.logits], dim=1)  # (B, T, A)
