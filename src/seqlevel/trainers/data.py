"""Turning a ``datasets.Dataset`` of text or token ids into padded causal-LM batches.

Shared by every trainer. Labels are ``-100`` exactly where ``attention_mask`` is 0, so a real ``<eos>`` is a
training target even when the pad token equals ``<eos>`` (GPT-2); ``DataCollatorForLanguageModeling`` would
drop it because it masks by pad id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


def tokenize_dataset(dataset, tokenizer, *, text_field: str = "text", max_length: int = 512, append_eos: bool = True):
    """Return ``dataset`` with an ``input_ids`` column (and nothing else).

    Accepts a dataset that already has ``input_ids`` (lists of ints) or a text column ``text_field``. Examples are
    truncated to ``max_length - 1`` tokens, then ``<eos>`` is appended (the MixCE recipe: 511 + EOS).

    Raises:
        ValueError: empty dataset, no usable column, no tokenizer for text, or an example with no tokens.
    """
    if dataset is None or len(dataset) == 0:
        raise ValueError("train_dataset is empty; pass a datasets.Dataset with at least one example "
                         f"(a '{text_field}' column of strings or an 'input_ids' column of token ids)")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (one token plus <eos>), got {max_length}")
    cols = dataset.column_names
    eos = getattr(tokenizer, "eos_token_id", None) if append_eos else None
    if append_eos and eos is None:
        raise ValueError("append_eos=True needs a tokenizer with an eos_token; set tokenizer.eos_token or append_eos=False")
    if "input_ids" in cols:
        def fn(ex):
            ids = list(ex["input_ids"])[: max_length - (1 if eos is not None else 0)]
            return {"input_ids": ids + ([eos] if eos is not None else [])}
    elif text_field in cols:
        if tokenizer is None:
            raise ValueError(f"the dataset has a '{text_field}' column but no tokenizer was given; "
                             "pass processing_class=<tokenizer>")

        def fn(ex):
            ids = tokenizer(ex[text_field], add_special_tokens=False)["input_ids"]
            ids = ids[: max_length - (1 if eos is not None else 0)]
            return {"input_ids": ids + ([eos] if eos is not None else [])}
    else:
        raise ValueError(f"the dataset has columns {cols}, but needs '{text_field}' (text) or 'input_ids' (token ids); "
                         "rename a column or set dataset_text_field")
    out = dataset.map(fn, remove_columns=cols, desc="tokenizing")
    n_empty = sum(1 for ids in out["input_ids"] if len(ids) < 2)
    if n_empty == len(out):
        raise ValueError("every example has fewer than 2 tokens, so there is nothing to predict; "
                         "check the text column or the tokenizer")
    return out


@dataclass
class CausalLMCollator:
    """Right-pads ``input_ids``; ``labels`` = ids where ``attention_mask`` is 1, ``-100`` elsewhere."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        B, T = len(features), max(lengths)
        input_ids = torch.full((B, T), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((B, T), dtype=torch.long)
        for i, f in enumerate(features):
            input_ids[i, : lengths[i]] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            attention_mask[i, : lengths[i]] = 1
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def load_text_dataset(path: str, text_field: str = "text"):
    """Load a local dataset: ``.txt`` (one example per non-empty line), ``.jsonl``/``.json`` (records with a
    ``text``/``input_ids`` field) or a directory written by ``datasets.Dataset.save_to_disk``.

    Raises:
        FileNotFoundError: the path does not exist (the message says what was looked for).
        ValueError: an unsupported file type or an empty dataset.
    """
    import datasets

    if not os.path.exists(path):
        raise FileNotFoundError(f"dataset {path!r} not found: looked for a .txt/.jsonl/.json file or a "
                                "directory saved with datasets.save_to_disk at that path")
    if os.path.isdir(path):
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise ValueError(f"{path!r} holds splits {list(ds)} but no 'train' split")
            ds = ds["train"]
    elif path.endswith(".txt"):
        with open(path, encoding="utf-8") as f:
            lines = [ln.rstrip("\n") for ln in f if ln.strip()]
        ds = datasets.Dataset.from_dict({text_field: lines})
    elif path.endswith((".jsonl", ".json")):
        ds = datasets.load_dataset("json", data_files=path, split="train")
    else:
        raise ValueError(f"unsupported dataset file {path!r}; use .txt (one example per line), .jsonl/.json, "
                         "or a directory saved with datasets.save_to_disk")
    if len(ds) == 0:
        raise ValueError(f"dataset {path!r} is empty; it needs at least one example")
    return ds
