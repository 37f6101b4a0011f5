"""Adding the ``<bksp>`` action to a model and its tokenizer (SequenceMatch §4.1).

The policy becomes a softmax over ``|V| + 1`` actions and the new logit enters ``V(s) = logsumexp``. The paper
does not say how the new rows are initialised [UNKNOWN]; our default (RECON) is the mean of the existing rows for
both the input embedding and the output (``lm_head``) row, so the new logit starts at the mean logit and the
initial ``P(<bksp>)`` is about ``1/|V|`` (at most ``1/(|V|+1)`` by Jensen's inequality).
"""

from __future__ import annotations

import torch

INIT_CHOICES = ("mean", "normal")
BACKSPACE_TOKEN = "<bksp>"  # the action's token text: defined here once, read by training, decoding and the CLI


def _init_row(weight: torch.Tensor, row: int, n_old: int, init: str, std: float) -> None:
    with torch.no_grad():
        if init == "mean":
            weight[row] = weight[:n_old].float().mean(0).to(weight.dtype)
        else:
            weight[row] = torch.randn_like(weight[row]) * std


def add_backspace_token(model, tokenizer, token: str = BACKSPACE_TOKEN, init: str = "mean") -> int:
    """Add ``token`` as a special token, resize the model's embeddings and initialise the new rows.

    Works for tied (GPT-2) and untied (Llama) embeddings: the input row is initialised, and the output row too
    when it is a separate tensor (a bias, if the head has one, gets the mean bias).

    Args:
        model: a Hugging Face causal LM (``PreTrainedModel``).
        tokenizer: its tokenizer. One that already has ``token`` is left unchanged.
        token: the backspace token's text.
        init: ``"mean"`` (default; mean of the existing rows, so initial P(<bksp>) ≈ 1/|V|) or ``"normal"``
            (N(0, config.initializer_range²), the model's own init for new rows).

    Returns:
        The id of ``token``.
    """
    if init not in INIT_CHOICES:
        raise ValueError(f"init must be one of {INIT_CHOICES}, got {init!r}; 'mean' makes P(<bksp>) ≈ 1/|V| at start")
    if token not in tokenizer.get_vocab():
        tokenizer.add_tokens([token], special_tokens=True)
    bk_id = int(tokenizer.convert_tokens_to_ids(token))
    emb_in = model.get_input_embeddings()
    n_old = emb_in.weight.shape[0]
    if bk_id < n_old:
        return bk_id  # the model already has a row for it (added before, or a padded vocabulary)
    std = float(getattr(model.config, "initializer_range", 0.02))
    model.resize_token_embeddings(max(len(tokenizer), bk_id + 1), mean_resizing=False)
    emb_in = model.get_input_embeddings()
    _init_row(emb_in.weight, bk_id, n_old, init, std)
    head = model.get_output_embeddings()
    if head is not None:
        if head.weight.data_ptr() != emb_in.weight.data_ptr():  # untied: initialise the lm_head row too
            _init_row(head.weight, bk_id, n_old, init, std)
        if getattr(head, "bias", None) is not None:
            with torch.no_grad():
                head.bias[bk_id] = head.bias[:n_old].mean() if init == "mean" else 0.0
    return bk_id
