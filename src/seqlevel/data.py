"""Data the way users have it, and the one model/tokenizer loader every command uses.

* :func:`load_text_dataset`: ``.txt`` (one example per non-empty line), ``.jsonl``/``.json``, ``.csv``,
  ``.parquet``, a ``datasets.save_to_disk`` directory, or a Hub dataset name (when online);
* :func:`tokenize_dataset` + :class:`CausalLMCollator`: text, token ids, prompt/completion records (loss on the
  completion only) and conversational ``messages`` records (rendered with the tokenizer's chat template) into padded
  causal-LM batches. Labels are ``-100`` exactly where ``attention_mask`` (or ``completion_mask``) is 0, so a real
  ``<eos>`` is a target even when the pad token equals ``<eos>`` (GPT-2);
* :func:`load_model_and_tokenizer`: a preset, a local directory or a Hub name, with the checks that turn a wrong
  path, an offline Hub name or a tokenizer larger than the model into one clear error.

Nothing here imports training code; ``metrics``, ``attributes`` and ``commands`` all read data through it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import torch

from seqlevel.backspace.vocab import BACKSPACE_TOKEN
from seqlevel.decoding.decoder import context_length

logger = logging.getLogger(__name__)
FILE_TYPES = (".txt", ".jsonl", ".json", ".csv", ".parquet")
__all__ = ["BACKSPACE_TOKEN", "CausalLMCollator", "context_length", "load_model_and_tokenizer", "load_text_dataset",
           "render_messages", "tokenize_dataset", "unencodable_characters"]


# ----- loading ------------------------------------------------------------------------------------------------------
def _read_utf8(path: str) -> str:
    with open(path, "rb") as f:
        raw = f.read()
    if b"\x00" in raw[:8192]:
        raise ValueError(f"dataset {path!r} looks like a binary file (it contains NUL bytes); pass a UTF-8 text "
                         f"file ({', '.join(FILE_TYPES)}) or a datasets.save_to_disk directory")
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark (Windows editors) is not part of the first example
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(f"dataset {path!r} is not UTF-8 text: byte 0x{raw[e.start]:02x} at line {line} cannot be "
                         "decoded; re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from e


def _json_records(path: str) -> list[dict]:
    text = _read_utf8(path)
    if path.lower().endswith(".json"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None  # may be JSON Lines with a .json name; read line by line below
        if isinstance(obj, list):
            records = obj
        elif isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
            n = {len(v) for v in obj.values()}
            if len(n) != 1:
                raise ValueError(f"dataset {path!r} is a JSON object of columns with different lengths {sorted(n)}; "
                                 "give every column one value per example")
            records = [dict(zip(obj, vals)) for vals in zip(*obj.values())]
        elif obj is not None:
            raise ValueError(f"dataset {path!r} holds a JSON {type(obj).__name__}; expected a list of records "
                             "(objects with a 'text' field) or JSON Lines (one object per line)")
        else:
            records = None
        if records is not None:
            bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
            if bad is not None:
                raise ValueError(f"dataset {path!r}: item {bad} is a {type(records[bad]).__name__}, not an object; "
                                 "every record must be a JSON object such as {\"text\": \"...\"}")
            return records
    records = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"dataset {path!r} line {i} is not valid JSON ({e.msg} at column {e.colno}); each "
                             "line of a .jsonl file must be one JSON object such as {\"text\": \"...\"}") from e
        if not isinstance(rec, dict):
            raise ValueError(f"dataset {path!r} line {i} is a JSON {type(rec).__name__}, not an object; each line "
                             "must be one JSON object such as {\"text\": \"...\"}")
        records.append(rec)
    return records


def _from_records(records: list[dict], path: str):
    import datasets
    import pyarrow as pa

    if not records:
        return datasets.Dataset.from_dict({})
    keys = list(dict.fromkeys(k for r in records for k in r))
    try:
        return datasets.Dataset.from_dict({k: [r.get(k) for r in records] for k in keys})
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
        raise ValueError(f"dataset {path!r}: the records do not form a table ({e}); give every record the same "
                         "fields with the same types") from e


def _load_file(path: str, text_field: str):
    import datasets

    kind = next((t for t in FILE_TYPES if path.lower().endswith(t)), None)
    if kind == ".txt":
        lines = [ln for ln in _read_utf8(path).splitlines() if ln.strip()]
        return datasets.Dataset.from_dict({text_field: lines})
    if kind in (".jsonl", ".json"):
        return _from_records(_json_records(path), path)
    if kind == ".csv":
        import pandas as pd

        _read_utf8(path)  # names the file and line on bad bytes
        try:
            df = pd.read_csv(path, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
            raise ValueError(f"dataset {path!r} is not a readable CSV file ({e}); give a header row and one "
                             "example per row") from e
        return datasets.Dataset.from_pandas(df, preserve_index=False)
    if kind == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise ValueError(f"dataset {path!r} is not a readable Parquet file ({e})") from e
        return datasets.Dataset(table)
    raise ValueError(f"unsupported dataset file {path!r}; use {', '.join(FILE_TYPES)}, a directory saved with "
                     "datasets.save_to_disk, or a Hub dataset name")


def _load_hub(name: str, config: str | None, split: str):
    import datasets

    offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        return datasets.load_dataset(name, config, split=split)
    except (OSError, ValueError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as e:
        why = ("downloads are switched off (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE=1) and it is not in the cache"
               if offline else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise ValueError(f"dataset {name!r} is not a local file or directory, and as a Hub dataset name it needs a "
                         f"connection: {why}. Pass a local {'/'.join(FILE_TYPES)} file or a save_to_disk directory, "
                         "or run online (check --dataset-config / --dataset-split)") from e


def load_text_dataset(path: str, text_field: str = "text", *, config: str | None = None, split: str | None = None):
    """Load a dataset from a local file, a ``save_to_disk`` directory or the Hub.

    Args:
        path: ``.txt`` (one example per non-empty line, into ``text_field``), ``.jsonl``/``.json`` (records),
            ``.csv`` (header row), ``.parquet``, a ``datasets.save_to_disk`` directory, or a Hub dataset name.
        text_field: the column a ``.txt`` file's lines go into.
        config: the Hub dataset's configuration (``--dataset-config``).
        split: the split of a ``DatasetDict`` or Hub dataset (default ``train``).

    Raises:
        FileNotFoundError: a path that looks local but does not exist.
        ValueError: an unsupported, binary, non-UTF-8, malformed or empty file; an offline Hub name; a missing split.
    """
    import datasets

    if not isinstance(path, str | os.PathLike):
        raise ValueError(f"dataset must be a path or a Hub dataset name (str), got {type(path).__name__}; to train "
                         "on texts in memory, pass datasets.Dataset.from_dict({'text': [...]}) to the trainer")
    path = os.fspath(path)
    looks_local = path.lower().endswith(FILE_TYPES) or path.startswith((".", "/", "~")) or os.sep * 2 in path
    if not os.path.exists(path):
        if looks_local or path.count("/") > 1 or not path.strip():
            raise FileNotFoundError(f"dataset {path!r} not found: looked for a {'/'.join(FILE_TYPES)} file or a "
                                    "directory saved with datasets.save_to_disk at that path")
        ds = _load_hub(path, config, split or "train")
    elif os.path.isdir(path):
        try:
            ds = datasets.load_from_disk(path)
        except (FileNotFoundError, ValueError, OSError) as e:
            raise ValueError(f"dataset directory {path!r} was not written by datasets.save_to_disk ({e}); pass such "
                             f"a directory or one {'/'.join(FILE_TYPES)} file") from e
        if isinstance(ds, datasets.DatasetDict):
            want = split or "train"
            if want not in ds:
                raise ValueError(f"{path!r} holds splits {list(ds)} but no {want!r} split; pass --dataset-split "
                                 f"one of {list(ds)}")
            ds = ds[want]
    else:
        ds = _load_file(path, text_field)
    if isinstance(ds, datasets.DatasetDict):  # a Hub dataset loaded without a split
        ds = ds[split or "train"]
    if len(ds) == 0:
        raise ValueError(f"dataset {path!r} is empty; it needs at least one example")
    return ds


def unencodable_characters(tokenizer, text: str) -> list[str]:
    """The characters of ``text`` that ``tokenizer`` maps to its ``<unk>`` token, in order, each once.

    A fast tokenizer names them through its offsets; otherwise each character is encoded alone. A tokenizer
    without ``<unk>`` (byte-level BPE, byte fallback) encodes everything and returns ``[]``.
    """
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None or not text:
        return []
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        spans = [text[a:b] for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]) if i == unk]
        chars = [c for span in spans for c in span if unk in tokenizer(c, add_special_tokens=False)["input_ids"]]
        chars = chars or [c for span in spans for c in span]
    except NotImplementedError:  # a slow tokenizer has no offsets
        chars = [c for c in text if unk in tokenizer(c, add_special_tokens=False)["input_ids"]]
    return list(dict.fromkeys(chars))


# ----- chat and prompt/completion records ---------------------------------------------------------------------------
def render_messages(dataset, tokenizer):
    """Turn a ``messages`` column (lists of ``{"role", "content"}``) into ``prompt`` / ``completion`` text.

    The completion is the last message (which must be the assistant's); the prompt is everything before it rendered
    with the tokenizer's chat template and the generation prompt, so the loss falls on the assistant's reply only.

    Raises:
        ValueError: the tokenizer has no chat template, or a conversation does not end with an assistant turn.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(f"the dataset has conversational 'messages' records, but the tokenizer {name!r} has no chat "
                         "template; use a chat model's tokenizer (--tokenizer), set tokenizer.chat_template, or give "
                         "'text' or 'prompt' + 'completion' records")
    prompts, completions = [], []
    for i, msgs in enumerate(dataset["messages"]):
        if not msgs or not isinstance(msgs, list) or msgs[-1].get("role") != "assistant":
            raise ValueError(f"conversation {i} does not end with an assistant message; each 'messages' record needs "
                             "the assistant's reply last (it is the training target)")
        prompt = tokenizer.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(msgs, tokenize=False)
        if not full.startswith(prompt):
            raise ValueError(f"conversation {i}: the chat template does not render the prompt as a prefix of the "
                             "whole conversation, so the reply cannot be located; use 'prompt' + 'completion' records")
        prompts.append(prompt)
        completions.append(full[len(prompt):])
    import datasets

    return datasets.Dataset.from_dict({"prompt": prompts, "completion": completions})


def tokenize_dataset(dataset, tokenizer, *, text_field: str = "text", max_length: int = 512, append_eos: bool = True):
    """Return ``dataset`` with ``input_ids`` (and ``completion_mask`` for prompt/completion records).

    Accepts ``input_ids`` (token ids), a text column ``text_field``, ``prompt`` + ``completion`` (loss on the
    completion only) or ``messages`` (see :func:`render_messages`). Examples are truncated to ``max_length - 1``
    tokens, then ``<eos>`` is appended (the MixCE recipe: 511 + EOS); how many were truncated is logged.

    Raises:
        ValueError: empty dataset, no usable column, no tokenizer for text, or an example with no tokens.
    """
    if dataset is not None and not hasattr(dataset, "column_names"):
        raise ValueError(f"the dataset must be a datasets.Dataset, got {type(dataset).__name__}; build one with "
                         "datasets.Dataset.from_dict({'text': [...]}) (or seqlevel.data.load_text_dataset(path))")
    if dataset is None or len(dataset) == 0:
        raise ValueError("train_dataset is empty; pass a datasets.Dataset with at least one example "
                         f"(a '{text_field}' column of strings or an 'input_ids' column of token ids)")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (one token plus <eos>), got {max_length}")
    cols = dataset.column_names
    eos = getattr(tokenizer, "eos_token_id", None) if append_eos else None
    if append_eos and eos is None:
        raise ValueError("append_eos=True needs a tokenizer with an eos_token; set tokenizer.eos_token or append_eos=False")
    keep = max_length - (1 if eos is not None else 0)
    tail = [eos] if eos is not None else []
    if "input_ids" not in cols and text_field not in cols and "messages" in cols and "prompt" not in cols:
        dataset, cols = render_messages(dataset, tokenizer), ["prompt", "completion"]
    if "input_ids" not in cols and tokenizer is None and ({text_field, "prompt"} & set(cols)):
        raise ValueError(f"the dataset has text columns {cols} but no tokenizer was given; "
                         "pass processing_class=<tokenizer>")
    enc = (lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]) if tokenizer is not None else None

    def cut(ids):
        return ids[:keep], len(ids) > keep

    if "input_ids" in cols:
        def fn(ex):
            ids, over = cut(list(ex["input_ids"]))
            return {"input_ids": ids + tail, "_truncated": over}
    elif text_field in cols:
        def fn(ex):
            if not isinstance(ex[text_field], str):
                raise ValueError(f"column '{text_field}' holds a {type(ex[text_field]).__name__}, not text; pass "
                                 "--dataset-text-field naming a column of strings")
            ids, over = cut(enc(ex[text_field]))
            return {"input_ids": ids + tail, "_truncated": over}
    elif "prompt" in cols and "completion" in cols:
        def fn(ex):
            p, c = enc(ex["prompt"] or ""), enc(ex["completion"] or "")
            ids, over = cut(p + c)
            mask = ([0] * len(p) + [1] * len(c))[: len(ids)]
            return {"input_ids": ids + tail, "completion_mask": mask + [1] * len(tail), "_truncated": over}
    else:
        raise ValueError(f"the dataset has columns {cols}, but needs '{text_field}' (text), 'prompt' + 'completion', "
                         "'messages' (chat) or 'input_ids' (token ids); rename a column or set dataset_text_field "
                         "(--dataset-text-field)")
    out = dataset.map(fn, remove_columns=cols, desc="tokenizing")
    n_over = sum(out["_truncated"])
    out = out.remove_columns("_truncated")
    if n_over:
        logger.warning("note: %d of %d examples are longer than max_length=%d tokens and were truncated", n_over,
                       len(out), max_length)
    if "completion_mask" in out.column_names:
        if not any(sum(m[1:]) for m in out["completion_mask"]):
            raise ValueError("no example has a completion token inside max_length, so there is nothing to predict; "
                             "check the 'completion' column or raise max_length")
    elif all(len(ids) < 2 for ids in out["input_ids"]):
        raise ValueError("every example has fewer than 2 tokens, so there is nothing to predict; "
                         "check the text column or the tokenizer")
    return out


@dataclass
class CausalLMCollator:
    """Right-pads ``input_ids``; ``labels`` = ids where ``attention_mask`` (and ``completion_mask``) is 1, else -100."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        B, T = len(features), max(lengths)
        input_ids = torch.full((B, T), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((B, T), dtype=torch.long)
        target = torch.zeros((B, T), dtype=torch.bool)
        for i, f in enumerate(features):
            input_ids[i, : lengths[i]] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            attention_mask[i, : lengths[i]] = 1
            cm = f.get("completion_mask")
            target[i, : lengths[i]] = True if cm is None else torch.as_tensor(cm, dtype=torch.bool)
        labels = input_ids.masked_fill(~target, -100)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# ----- the one model/tokenizer loader -------------------------------------------------------------------------------
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")


def _check_local_model_dir(path: str, attribute: bool) -> None:
    if not os.path.isdir(path):
        raise ValueError(f"model path {path!r} is a file; pass a directory with config.json and weights (as written "
                         "by save_pretrained / seqlevel train)")
    names = set(os.listdir(path))
    if attribute and "attribute_head_config.json" not in names:
        raise ValueError(f"model directory {path!r} holds no attribute head (attribute_head_config.json); explain "
                         "and generate --steer need a CAT model: train one with `seqlevel train --objective cat` or save an "
                         "AttributeModel with save_pretrained")
    if "config.json" not in names and "adapter_config.json" not in names:
        ckpts = sorted(n for n in names if n.startswith("checkpoint-"))
        hint = (f"; it holds {ckpts}: the run did not finish, so pass {os.path.join(path, ckpts[-1])!r} or resume "
                "the run with --resume") if ckpts else ""
        raise ValueError(f"model directory {path!r} has no config.json, so it is not a saved model (expected "
                         f"save_pretrained output: config.json + model.safetensors){hint}")


def _check_vocab(model, tok, model_name: str, tok_name: str) -> None:
    emb = model.get_input_embeddings()
    rows = int(emb.weight.shape[0]) if emb is not None and hasattr(emb, "weight") else None
    if rows is not None and len(tok) > rows:
        raise ValueError(f"tokenizer {tok_name!r} has {len(tok)} tokens but model {model_name!r} has only {rows} "
                         f"embedding rows, so ids >= {rows} would crash; pass the tokenizer the model was trained "
                         "with (--tokenizer), or resize the model's embeddings first")


def load_model_and_tokenizer(model: str, tokenizer: str | None = None, *, seed: int = 0,
                             preset_backspace: bool = False, attribute: bool = False,
                             model_kwargs: dict | None = None):
    """A preset (``tiny-gpt2`` ...) with a byte-level tokenizer, a local directory, or a Hub name.

    Args:
        model: a preset name, a directory written by ``save_pretrained``, or a Hub name (needs a connection unless
            cached).
        tokenizer: tokenizer name/path; default the model's (a byte-level tokenizer for presets).
        seed: initialisation seed of a preset.
        preset_backspace: give a preset's byte-level tokenizer the ``<bksp>`` token (for decoding smoke tests).
        attribute: load an :class:`~seqlevel.attributes.AttributeModel` (base + CAT head) instead of a causal LM.
        model_kwargs: passed to ``from_pretrained`` (e.g. ``dtype``, ``attn_implementation``).

    Returns:
        ``(model, tokenizer)``; the tokenizer has a pad token (``<eos>`` when it had none).

    Raises:
        ValueError: a missing path, a directory that is not a saved model (or has no tokenizer), a Hub name that
            cannot be fetched (says whether downloads are off), or a tokenizer larger than the model's vocabulary.
    """
    from transformers import AutoModelForCausalLM

    from seqlevel.presets import MODEL_PRESETS, byte_tokenizer, tiny_model

    presets = ", ".join(sorted(MODEL_PRESETS))
    if not isinstance(model, str | os.PathLike) or not os.fspath(model).strip():
        raise ValueError(f"model must be a preset ({presets}), a directory or a Hub name, got {model!r}")
    model = os.fspath(model)
    if model in MODEL_PRESETS and not attribute:
        tok = _load_tokenizer(tokenizer, model) if tokenizer else byte_tokenizer(
            extra_special_tokens=[BACKSPACE_TOKEN] if preset_backspace else ())
        return tiny_model(model, tokenizer=tok, seed=seed), tok
    expanded = os.path.expanduser(model)
    looks_local = model.startswith((".", "/", "~")) or os.path.exists(expanded) or model.count("/") > 1
    if looks_local:
        if not os.path.exists(expanded):
            raise ValueError(f"model path {model!r} does not exist: looked for a directory with config.json and "
                             "weights (as written by save_pretrained / seqlevel train), or a preset "
                             f"({presets})")
        _check_local_model_dir(expanded, attribute)
        if tokenizer is None and not set(os.listdir(expanded)) & set(_TOKENIZER_FILES):
            raise ValueError(f"model directory {model!r} has no tokenizer files ({', '.join(_TOKENIZER_FILES[:2])}); "
                             "pass --tokenizer, or save the tokenizer beside the model (save_pretrained)")
    elif attribute:
        raise ValueError(f"{model!r} is not a local directory; explain and generate --steer need a CAT model directory written by "
                         "`seqlevel train --objective cat` (AttributeModel.save_pretrained)")
    try:
        tok = _load_tokenizer(tokenizer or expanded, model)
    except ValueError as err:
        if tokenizer or looks_local:
            raise
        raise ValueError(_hub_message("model", model, err.__cause__ or err, presets)) from err
    try:
        if attribute:
            from seqlevel.attributes.model import AttributeModel

            net = AttributeModel.from_pretrained(expanded, **(model_kwargs or {}))
        else:
            net = AutoModelForCausalLM.from_pretrained(expanded, **(model_kwargs or {}))
    except OSError as err:
        raise ValueError(_hub_message("model", model, err, presets)) from err
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # GPT-2 has no pad token; pads are masked out of the loss anyway
    _check_vocab(net.base if attribute else net, tok, model, tokenizer or model)
    return net, tok


def _load_tokenizer(name: str, model: str):
    from transformers import AutoTokenizer

    if (name.startswith((".", "/", "~")) or name.count("/") > 1) and not os.path.exists(os.path.expanduser(name)):
        raise ValueError(f"tokenizer path {name!r} does not exist; pass a directory written by "
                         "tokenizer.save_pretrained or a Hub name")
    try:
        return AutoTokenizer.from_pretrained(os.path.expanduser(name))
    except (OSError, ValueError) as err:
        raise ValueError(_hub_message("tokenizer", name, err, None)) from err


def _hub_message(what: str, name: str, err: Exception, presets: str | None) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if os.path.isdir(os.path.expanduser(name)):
        return f"could not load the {what} from directory {name!r}: {first}"
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    why = ("downloads are switched off (HF_HUB_OFFLINE=1) and it is not in the local cache" if offline
           else f"the download failed ({first})")
    alt = f", a preset ({presets})" if presets else ""
    if presets:
        import difflib

        close = difflib.get_close_matches(name, presets.split(", "), n=1)
        alt += f" (did you mean {close[0]!r}?)" if close else ""
    return (f"could not load {what} {name!r}: it is not a local directory, and as a Hub name it needs a connection: "
            f"{why}. Pass a directory written by save_pretrained{alt}, or run on a machine with internet access")
