"""``AttributeModel``: a Hugging Face causal LM (optionally PEFT-wrapped) joined with an :class:`AttributeHead`.

One forward pass gives the token logits, the trunk's last hidden state and the attribute head's outputs, either
gathered at given next tokens (training: ``(B, T, n_out)``) or for every candidate (inference:
``(B, T, V, n_out)``). The head reads ``hidden_states[-1]``, the same tensor the decoder's steer hook gets as
``ctx.hidden_states[-1]``, so steering and estimation see identical head inputs.

``save_pretrained(dir)`` writes the base model as Hugging Face does (a PEFT model writes its adapter only) and, beside
it, ``attribute_head.safetensors`` + ``attribute_head_config.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from seqlevel.attributes.head import AttributeHead, AttributeHeadConfig

HEAD_WEIGHTS = "attribute_head.safetensors"
HEAD_CONFIG = "attribute_head_config.json"


def base_vocab_size(model) -> int:
    """Output vocabulary of a causal LM (PEFT-wrapped or not)."""
    head = model.get_output_embeddings()
    if head is not None and hasattr(head, "weight"):
        return int(head.weight.shape[0])
    return int(model.config.get_text_config().vocab_size)


def _hidden_size(model) -> int:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(getattr(cfg, "hidden_size", None) or cfg.n_embd)


def window_mask(attention_mask: torch.Tensor | None, shape: tuple[int, int], window: int,
                dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Banded causal mask: position ``i`` attends to ``j`` iff ``i - window < j <= i`` and ``j`` is not padding.

    Args:
        attention_mask: ``(B, T)`` 1 = token, 0 = padding, or ``None`` (no padding).
        shape: ``(B, T)``.
        window: W >= 1.
        dtype: dtype of the additive mask (the model's compute dtype).

    Returns:
        ``(B, 1, T, T)`` additive float mask (0 = attend, ``finfo.min`` = blocked), the 4-D form Hugging Face models
        take as-is. Rows with no allowed key (padding queries) get a uniform softmax, not NaN.
    """
    B, T = shape
    i = torch.arange(T, device=device)
    band = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - window)  # (T, T) query x key
    allowed = band.expand(B, 1, T, T)
    if attention_mask is not None:
        allowed = allowed & attention_mask.to(device=device, dtype=torch.bool)[:, None, None, :]
    return torch.zeros(B, 1, T, T, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)


@dataclass
class AttributeOutput:
    """``logits (B, T, V)``, ``hidden (B, T, d)``; ``attribute`` gathered ``(B, T', n_out)`` or all ``(B, T, V, n_out)``;
    ``cache``: the base's KV cache when called with ``use_cache=True`` (full causal attention only)."""

    logits: torch.Tensor
    hidden: torch.Tensor
    attribute: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    cache: object | None = None


class AttributeModel(nn.Module):
    """Base causal LM + attribute head.

    Args:
        base: a ``PreTrainedModel`` (or ``peft.PeftModel``) causal LM.
        head: an :class:`AttributeHead` whose ``vocab_size`` equals the base's output vocabulary.
    """

    accepts_loss_kwargs = True  # lets transformers.Trainer count num_items_in_batch for us
    loss_type = "ForCausalLM"  # ... over labels[:, 1:], as a causal LM loss shifts
    main_input_name = "input_ids"

    def __init__(self, base, head: AttributeHead):
        super().__init__()
        V = base_vocab_size(base)
        if head.config.vocab_size != V:
            raise ValueError(f"attribute head vocabulary ({head.config.vocab_size}) does not match the base model's "
                             f"({V}); build the head for this base (AttributeModel.for_base) or resize the base "
                             "embeddings to the head's vocabulary before joining them")
        self.base, self.head = base, head

    @classmethod
    def for_base(cls, base, kind: str = "binary", num_classes: int = 2, rank: int = 32,
                 block_size: int | None = None, query_std: float = 0.02,
                 context_window: int | None = None, dueling: bool = False,
                 dueling_candidates: list[int] | None = None) -> AttributeModel:
        """A fresh head sized for ``base`` (vocabulary and hidden size read from it; the rest as in
        :class:`AttributeHeadConfig`)."""
        cfg = AttributeHeadConfig(kind=kind, vocab_size=base_vocab_size(base), hidden_size=_hidden_size(base),
                                  num_classes=num_classes, rank=rank, block_size=block_size, query_std=query_std,
                                  context_window=context_window, dueling=dueling,
                                  dueling_candidates=dueling_candidates)
        head = AttributeHead(cfg).to(next(base.parameters()).device)
        return cls(base, head)

    @property
    def config(self):
        return self.base.config

    @property
    def _no_split_modules(self) -> list[str]:
        """The base's transformer-block classes, so FSDP's transformer-based auto-wrap finds layers to shard."""
        base = getattr(self.base, "get_base_model", lambda: self.base)()  # PEFT: the underlying PreTrainedModel
        return list(getattr(base, "_no_split_modules", None) or [])

    @property
    def kind(self) -> str:
        return self.head.config.kind

    @property
    def context_window(self) -> int | None:
        """The trunk's attention window W (``None`` = full causal); see :class:`AttributeHeadConfig`."""
        return self.head.config.context_window

    @property
    def receptive_field(self) -> int | None:
        """Tokens the last position's output depends on: ``L·(W − 1) + 1`` for a window W over L layers (``None``
        with full causal attention). Running the model on only the last ``receptive_field`` tokens, with their own
        position ids, gives the last position's outputs of a forward over the whole history (play uses this)."""
        W = self.context_window
        if W is None:
            return None
        cfg = self.base.config.get_text_config() if hasattr(self.base.config, "get_text_config") else self.base.config
        return int(cfg.num_hidden_layers) * (W - 1) + 1

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                next_tokens: torch.Tensor | None = None, all_candidates: bool = False,
                labels: torch.Tensor | None = None, attribute_labels: torch.Tensor | None = None,
                **kwargs) -> AttributeOutput:
        """One pass of the base and the head.

        Args:
            input_ids / attention_mask: ``(B, T)``.
            next_tokens: ``(B, T')`` candidates to gather the head at, for positions ``0..T'-1`` (training passes
                ``input_ids[:, 1:]``, ``-100`` allowed: it is gathered at id 0 and must be masked by the caller).
            all_candidates: also compute the head for every candidate, ``(B, T, V, n_out)``.
            labels / attribute_labels: accepted and ignored (the trainer computes the loss).

        With ``context_window`` W set, the 2-D padding mask is replaced by the banded 4-D mask of
        :func:`window_mask`, so every caller (training, estimation, play) sees the same W-token context.
        """
        kwargs.pop("num_items_in_batch", None)
        W = self.context_window
        if W is not None:
            if kwargs.get("past_key_values") is not None or kwargs.get("cache") is not None:
                raise ValueError(f"this model has context_window={W}; a KV cache would let new tokens attend past "
                                 "the window. Call it without a cache (cache= or past_key_values=) on (at least) the last "
                                 "receptive_field tokens, with their position ids")
            if attention_mask is not None and attention_mask.dim() == 4:
                raise ValueError("pass a 2-D padding mask; the model builds its own 4-D window mask")
            dtype = next(self.base.parameters()).dtype
            attention_mask = window_mask(attention_mask, tuple(input_ids.shape), W, dtype, input_ids.device)
        out = self.base(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, **kwargs)
        hidden = out.hidden_states[-1]  # (B, T, d): trunk state after the final norm
        attr = None
        if next_tokens is not None:
            Tn = next_tokens.shape[1]
            attr = self.head.gathered(hidden[:, :Tn], next_tokens.clamp(min=0))  # (B, T', n_out)
        elif all_candidates:
            attr = self.head.all_candidates(hidden)  # (B, T, V, n_out)
        return AttributeOutput(logits=out.logits, hidden=hidden, attribute=attr,
                               cache=out.get("cache"))

    # -- saving and loading -------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str, **kwargs) -> None:
        """Write the base (or its PEFT adapter) and the head (safetensors + JSON config) into ``save_directory``."""
        os.makedirs(save_directory, exist_ok=True)
        kwargs.pop("state_dict", None)  # the Trainer passes the joint state dict; each part saves its own
        self.base.save_pretrained(save_directory, **kwargs)
        state = {k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}
        save_file(state, os.path.join(save_directory, HEAD_WEIGHTS), metadata={"format": "pt"})
        with open(os.path.join(save_directory, HEAD_CONFIG), "w", encoding="utf-8") as f:
            f.write(self.head.config.to_json())

    @classmethod
    def from_pretrained(cls, path: str, base_model=None, **base_kwargs) -> AttributeModel:
        """Load what :meth:`save_pretrained` wrote.

        Args:
            path: the directory.
            base_model: the base model object; needed when ``path`` holds a PEFT adapter whose base is not a
                loadable name/path (then the adapter is applied to it), optional otherwise (``path`` is loaded with
                ``AutoModelForCausalLM``).
            **base_kwargs: passed to ``from_pretrained`` of the base.
        """
        cfg_path = os.path.join(path, HEAD_CONFIG)
        if not os.path.isfile(cfg_path):
            raise FileNotFoundError(f"{cfg_path} not found: {path!r} holds no attribute head; save one with "
                                    "AttributeModel.save_pretrained")
        with open(cfg_path, encoding="utf-8") as f:
            head_cfg = AttributeHeadConfig.from_dict(json.load(f))
        is_adapter = os.path.isfile(os.path.join(path, "adapter_config.json"))
        if is_adapter:
            from peft import AutoPeftModelForCausalLM, PeftModel

            base = (PeftModel.from_pretrained(base_model, path, **base_kwargs) if base_model is not None
                    else AutoPeftModelForCausalLM.from_pretrained(path, **base_kwargs))
        elif base_model is not None:
            base = base_model
        else:
            from transformers import AutoModelForCausalLM

            base = AutoModelForCausalLM.from_pretrained(path, **base_kwargs)
        head = AttributeHead(head_cfg)
        if head_cfg.vocab_size != base_vocab_size(base):
            raise ValueError(f"the saved attribute head has vocabulary {head_cfg.vocab_size} but the base model has "
                             f"{base_vocab_size(base)}; load it with the base it was trained on (base_model=...)")
        head.load_state_dict(load_file(os.path.join(path, HEAD_WEIGHTS)))
        return cls(base, head.to(next(base.parameters()).device))
