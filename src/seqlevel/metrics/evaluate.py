"""``seqlevel evaluate``: generate continuations of data prompts and compute the papers' metrics.

The recipe follows the MixCE evaluation (§3.3–3.4 of our notes): the first ``prompt_tokens`` tokens of each
data example are the prompt; the model continues it by ancestral sampling (the backtracking decoder, with
``<bksp>`` when the model has it); human and model texts both include the prompt. Metrics: perplexity on the
data (forward cross-entropy), both diversity definitions, rep-2..4, unigram entropy, lengths, backspace usage
and MAUVE (features from ``featurizer``, default the evaluated model itself).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from seqlevel.backspace.vocab import BACKSPACE_TOKEN
from seqlevel.io import atomic_write_json, atomic_write_text
from seqlevel.metrics.mauve import mauve_with_error_bars, report_line


@dataclass
class EvalConfig:
    """Options of :func:`evaluate_model` (the CLI flags of ``seqlevel evaluate``)."""

    model: str
    data: str
    prompt_tokens: int = 50
    num_samples: int = 100
    max_new_actions: int = 128
    backspace: bool | None = None  # None: use <bksp> if the tokenizer has it
    featurizer: str | None = None
    mauve: bool = True
    mauve_seeds: int = 5  # k-means seeds: MAUVE is reported as mean ± std over them
    mauve_max_tokens: int | None = None  # truncation of both sides; None: the shorter side's median length
    seed: int = 0
    batch_size: int = 16
    output_dir: str = "runs/evaluate"
    text_field: str = "text"  # column of text records (``seqlevel train --dataset-text-field``)
    data_config: str | None = None  # Hub dataset configuration
    data_split: str | None = None  # split of a Hub dataset or DatasetDict directory (default train)


def _examples(cfg: EvalConfig, ds, tok) -> tuple[list[tuple[list[int], list[int]]], int, bool]:
    """``(prompt ids, whole example ids)`` per usable record, read as ``seqlevel train`` reads them; also the
    longest example's length and whether the prompts come from the records (not the first ``prompt_tokens``).

    Text records (``cfg.text_field``) and token ids: the first ``prompt_tokens`` tokens are the prompt (examples
    not longer than that are skipped). ``prompt`` + ``completion`` records: the record's prompt; ``messages``
    (chat): rendered with the tokenizer's chat template into prompt + completion, as for training.
    """
    from seqlevel.data import render_messages

    cols = ds.column_names
    if "input_ids" not in cols and cfg.text_field not in cols and "messages" in cols and "prompt" not in cols:
        ds, cols = render_messages(ds, tok), ["prompt", "completion"]

    def enc(text):
        return tok(text, add_special_tokens=False)["input_ids"] if text else []

    if "input_ids" in cols or cfg.text_field in cols:
        col = "input_ids" if "input_ids" in cols else cfg.text_field
        bad = next((v for v in ds[col] if col != "input_ids" and v is not None and not isinstance(v, str)), None)
        if bad is not None:
            raise ValueError(f"column {col!r} of {cfg.data!r} holds a {type(bad).__name__}, not text; pass "
                             "--text-field naming a column of strings")
        full = [list(v) if col == "input_ids" else enc(v) for v in ds[col] if v]
        usable = [(x[: cfg.prompt_tokens], x) for x in full if len(x) > cfg.prompt_tokens]
        return usable, max((len(x) for x in full), default=0), False
    if "prompt" in cols and "completion" in cols:
        out = []
        for p, c in zip(ds["prompt"], ds["completion"]):
            pi, ci = enc(p), enc(c)
            if pi and ci:
                out.append((pi, pi + ci))
        return out, max((len(x) for _, x in out), default=0), True
    raise ValueError(f"{cfg.data!r} has columns {cols}, but evaluate needs {cfg.text_field!r} (text; see "
                     "--text-field), 'prompt' + 'completion', 'messages' (chat) or 'input_ids', as seqlevel train")


def _left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, W)`` left-padded ids and their attention mask."""
    W = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (W - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (W - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def evaluate_model(cfg: EvalConfig, progress: bool = True) -> dict:
    """Generate, compute metrics, write ``metrics.json`` and ``report.md`` into ``cfg.output_dir``.

    Raises:
        ValueError: a model that does not exist, ``prompt_tokens`` longer than every data example, bad counts.
        ImportError: MAUVE asked for but ``mauve-text`` missing (names the extra to install).
    """
    from seqlevel.data import context_length, load_model_and_tokenizer
    from seqlevel.decoding import generate
    from seqlevel.metrics import (
        backspace_usage,
        distinct_ngram_diversity,
        length_stats,
        ngram_entropy,
        perplexity,
        rep_n,
        simctg_diversity,
    )

    if cfg.prompt_tokens < 1:
        raise ValueError(f"--prompt-tokens must be >= 1, got {cfg.prompt_tokens}")
    if cfg.num_samples < 2:
        raise ValueError(f"--num-samples must be >= 2 (MAUVE and diversity compare sets), got {cfg.num_samples}")
    if cfg.max_new_actions < 1:
        raise ValueError(f"--max-new-actions must be >= 1, got {cfg.max_new_actions}")
    if cfg.mauve_seeds < 1:
        raise ValueError(f"--mauve-seeds must be >= 1, got {cfg.mauve_seeds}; 5 seeds give a usable std")
    if cfg.mauve_max_tokens is not None and cfg.mauve_max_tokens < 1:
        raise ValueError(f"--mauve-max-tokens must be >= 1, got {cfg.mauve_max_tokens}; omit it for the default")
    if os.path.isfile(cfg.output_dir):
        raise ValueError(f"--output-dir {cfg.output_dir!r} is a file; pass a directory path")
    if cfg.mauve:
        from seqlevel.metrics.mauve import _require_mauve

        _require_mauve()  # fail before any work if the extra is missing
    from seqlevel.data import load_text_dataset

    ds = load_text_dataset(cfg.data, cfg.text_field, config=cfg.data_config, split=cfg.data_split)
    model, tok = load_model_and_tokenizer(cfg.model)
    model.eval()
    feat_model, feat_tok = model, tok
    if cfg.mauve and cfg.featurizer:  # before generating: a featurizer that cannot load fails in seconds
        feat_model, feat_tok = load_model_and_tokenizer(cfg.featurizer)
    usable, longest, own_prompts = _examples(cfg, ds, tok)
    if not usable and own_prompts:
        raise ValueError(f"no record of {cfg.data!r} has both a non-empty prompt and a non-empty completion")
    if not usable:
        raise ValueError(f"--prompt-tokens {cfg.prompt_tokens} is longer than the data: the longest example has "
                         f"{longest} tokens; use a smaller --prompt-tokens")
    ctx = context_length(model)
    longest_prompt = max(len(p) for p, _ in usable)
    if ctx is not None and longest_prompt >= ctx:
        flag = (f"--prompt-tokens {cfg.prompt_tokens}" if longest_prompt == cfg.prompt_tokens
                else f"a prompt of {longest_prompt} tokens")
        raise ValueError(f"{flag} leaves no room to generate in the model's context of {ctx} tokens; use "
                         f"--prompt-tokens {ctx - 1} or less (or shorter prompts)")
    usable = usable[: cfg.num_samples]
    if len(usable) < 2:
        raise ValueError(f"only {len(usable)} example(s) are longer than --prompt-tokens {cfg.prompt_tokens}; "
                         "need at least 2")
    bksp = tok.convert_tokens_to_ids(BACKSPACE_TOKEN) if BACKSPACE_TOKEN in tok.get_vocab() else None
    if cfg.backspace and bksp is None:
        raise ValueError("--backspace asked for, but the tokenizer has no <bksp> token; train with "
                         "--objective sequencematch or drop --backspace")
    if cfg.backspace is False:
        bksp = None

    human, model_texts, all_actions = [], [], []
    bar = tqdm(total=len(usable), desc="generating", disable=not progress)
    for i in range(0, len(usable), cfg.batch_size):
        chunk = usable[i : i + cfg.batch_size]
        prompts = [p for p, _ in chunk]
        inp, mask = _left_pad(prompts, tok.pad_token_id if tok.pad_token_id is not None else 0)
        out = generate(model, inp, mask, max_new_actions=cfg.max_new_actions, eos_token_id=tok.eos_token_id,
                       backspace_id=bksp, do_sample=True, seed=cfg.seed + i,
                       suppress_ids=[tok.pad_token_id, tok.unk_token_id])
        for (_, full), p, seq, acts in zip(chunk, prompts, out.sequences, out.actions):
            gen = [t for t in seq if t != tok.eos_token_id]
            human.append(tok.decode(full, skip_special_tokens=True))
            model_texts.append(tok.decode(p + gen, skip_special_tokens=True))
            all_actions.append(acts)
        bar.update(len(chunk))
    bar.close()

    gen_tokens = [tok(t, add_special_tokens=False)["input_ids"] for t in model_texts]
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    keep = ctx - len(eos) if ctx is not None else None  # perplexity over what fits in the model's context
    ppl = perplexity(model, [x[:keep] + eos for _, x in usable], pad_id=tok.pad_token_id or 0)
    metrics = {
        "model": cfg.model, "data": cfg.data, "num_samples": len(usable), "prompt_tokens": cfg.prompt_tokens,
        "prompts": "the records' prompts" if own_prompts else f"the first {cfg.prompt_tokens} tokens",
        "perplexity": ppl["perplexity"], "nll": ppl["nll"], "perplexity_unit": "per token",
        "diversity_mixce": distinct_ngram_diversity(gen_tokens),
        "diversity_simctg": simctg_diversity(gen_tokens),
        "rep_2": rep_n(gen_tokens, 2), "rep_3": rep_n(gen_tokens, 3), "rep_4": rep_n(gen_tokens, 4),
        "unigram_entropy": ngram_entropy(gen_tokens, 1),
        "length": length_stats(gen_tokens), "human_length": length_stats([x for _, x in usable]),
    }
    if bksp is not None:
        metrics["backspace"] = backspace_usage(all_actions, bksp)
    if cfg.mauve:
        n = len(human)
        res = mauve_with_error_bars(p_texts=human, q_texts=model_texts, featurizer=feat_model,
                                    featurizer_tokenizer=feat_tok, featurizer_name=cfg.featurizer or cfg.model,
                                    num_seeds=cfg.mauve_seeds, seed=cfg.seed, max_tokens=cfg.mauve_max_tokens,
                                    num_buckets=max(2, min(50, n // 10)), kmeans_num_redo=1, kmeans_max_iter=100)
        metrics["mauve"] = res.to_dict()  # mean, std, seeds, max_tokens, featurizer, feature_dim, meaningful, ...
        metrics["featurizer"] = cfg.featurizer or cfg.model
    # atomic: readers (and a run killed mid-write) see the old file or the whole new one, never half of it
    atomic_write_json(os.path.join(cfg.output_dir, "metrics.json"), metrics)
    atomic_write_text(os.path.join(cfg.output_dir, "report.md"), _report(metrics, human[:3], model_texts[:3]))
    return metrics


def _report(m: dict, human: list[str], model: list[str]) -> str:
    rows = [("perplexity (data, per token of this tokenizer)", f"{m['perplexity']:.3f}"), ("diversity (MixCE distinct-1..4)",
            f"{m['diversity_mixce']:.3f}"), ("diversity (SimCTG ∏(1−rep-n))", f"{m['diversity_simctg']:.3f}"),
            ("rep-2 / rep-3 / rep-4", f"{m['rep_2']:.3f} / {m['rep_3']:.3f} / {m['rep_4']:.3f}"),
            ("unigram entropy (nats)", f"{m['unigram_entropy']:.3f}"),
            ("mean length (model / human)", f"{m['length']['mean']:.1f} / {m['human_length']['mean']:.1f}")]
    if "mauve" in m:
        rows.append(("MAUVE", report_line(m["mauve"])))
    if "backspace" in m:
        rows.append(("backspace rate", f"{m['backspace']['rate']:.3f}"))
    prompts = m.get("prompts") or f"the first {m['prompt_tokens']} tokens"
    lines = [f"# Evaluation of `{m['model']}` on `{m['data']}`", "",
             f"{m['num_samples']} samples, prompts: {prompts}, ancestral sampling.", "",
             "| metric | value |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows]]
    if human:
        lines += ["", "## Examples", ""]
    for h, g in zip(human, model):
        lines += [f"- human: {h[:200]!r}", f"  model: {g[:200]!r}"]
    return "\n".join(lines) + "\n"
