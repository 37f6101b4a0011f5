"""PEFT recipes: LoRA / QLoRA adapters with the ``<bksp>`` rows trainable (SequenceMatch's setting).

The SequenceMatch paper fine-tunes Llama-2 with LoRA (r = 64, α = 16). A new action has no pretrained
embedding or output row, so those rows must train beside the adapter; freezing them leaves ``<bksp>`` at its
initial logit forever. :func:`backspace_lora_config` uses PEFT's ``trainable_token_indices`` so only the new
rows (not the whole vocabulary) are trained and saved; tied heads (GPT-2) share the input row's delta.
"""

from __future__ import annotations

from collections.abc import Sequence


def _embedding_names(model) -> tuple[str, str | None, bool]:
    """Names of the input embedding and (untied) output head modules, and whether they are tied."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    names = {id(m): n for n, m in model.named_modules()}
    tied = head is not None and head.weight.data_ptr() == emb.weight.data_ptr()
    emb_name = names[id(emb)].rsplit(".", 1)[-1]
    head_name = None if head is None or tied else names[id(head)].rsplit(".", 1)[-1]
    return emb_name, head_name, tied


def backspace_lora_config(model, token_ids: int | Sequence[int], *, r: int = 64, lora_alpha: int = 16,
                          lora_dropout: float = 0.05, target_modules: str | list[str] = "all-linear", **kwargs):
    """A ``peft.LoraConfig`` whose adapter also trains the rows of ``token_ids`` (e.g. ``<bksp>``).

    Args:
        model: the base causal LM *after* :func:`seqlevel.backspace.add_backspace_token`.
        token_ids: id(s) whose input-embedding and output-head rows must train.
        r, lora_alpha, lora_dropout, target_modules: LoRA settings (defaults: the paper's r=64, α=16).
        **kwargs: more ``LoraConfig`` fields.
    """
    from peft import LoraConfig

    ids = [int(token_ids)] if isinstance(token_ids, int) else [int(t) for t in token_ids]
    vocab = model.get_input_embeddings().weight.shape[0]
    bad = [t for t in ids if not 0 <= t < vocab]
    if bad:
        raise ValueError(f"token ids {bad} are outside the model's vocabulary of {vocab}; call add_backspace_token "
                         "(which resizes the embeddings) before building the LoRA config")
    emb_name, head_name, _ = _embedding_names(model)
    indices = {emb_name: ids}
    if head_name is not None:
        indices[head_name] = ids  # untied head: its row needs its own trainable delta
    return LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=target_modules,
                      trainable_token_indices=indices, task_type="CAUSAL_LM", **kwargs)


def qlora_quantization_config():
    """The QLoRA 4-bit setting (NF4, double quantisation, bf16 compute) for ``from_pretrained(quantization_config=)``.

    Needs a CUDA GPU and ``bitsandbytes``; combine with :func:`backspace_lora_config` on the loaded model.
    """
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def _row_trainable(module, token_id: int) -> bool:
    adapter = getattr(module, "token_adapter", None)
    if adapter is not None:
        for ids in getattr(adapter, "token_indices", {}).values():
            if token_id in ids:
                return True
    # a full trainable copy (modules_to_save) or an unfrozen embedding
    return any(p.requires_grad and p.dim() == 2 and p.shape[0] > token_id for p in module.parameters())


def check_rows_trainable(model, token_ids: int | Sequence[int]) -> None:
    """Raise if a (PEFT) model would train neither the input nor the output row of some token in ``token_ids``.

    Raises:
        ValueError: naming the frozen rows and how to fix the PEFT config.
    """
    ids = [int(token_ids)] if isinstance(token_ids, int) else [int(t) for t in token_ids]
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is None or head.weight.data_ptr() == emb.weight.data_ptr() if hasattr(head, "weight") else False
    frozen = []
    for t in ids:
        if not _row_trainable(emb, t):
            frozen.append(f"input embedding row {t}")
        if head is not None and not tied and not _row_trainable(head, t):
            frozen.append(f"output head row {t}")
    if frozen:
        raise ValueError(f"the PEFT config freezes {', '.join(frozen)}: a new action such as <bksp> has no pretrained "
                         "row and would never learn. Build the config with "
                         "seqlevel.trainers.peft.backspace_lora_config(model, backspace_id), or add "
                         "trainable_token_indices / modules_to_save for the embedding and lm_head")
