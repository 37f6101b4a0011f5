"""``seqlevel generate``: decode prompts with :func:`seqlevel.decoding.generate`, from a file or stdin.

The options are defined here, beside the code that uses them (``add_arguments``), and ``seqlevel.cli`` only adds
them and calls :func:`cli_generate`. This module imports torch and transformers lazily, so building the parser
stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys

BACKSPACE_TOKEN = "<bksp>"  # the name seqlevel.backspace.add_backspace_token gives the action


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``seqlevel generate``."""
    p.add_argument("--model", required=True,
                   help="Hugging Face model name or local path (e.g. a seqlevel train output dir), or a preset "
                        "(tiny-gpt2, tiny-llama, small-gpt2, small-llama: random weights, for smoke tests)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer name/path; defaults to the model's, or a byte-level tokenizer for presets")
    p.add_argument("--prompts", default="-",
                   help="file with one prompt per line, or '-' for stdin (default); an empty line is a <bos> prompt")
    p.add_argument("--max-new-actions", type=int, default=128,
                   help="cap on actions per prompt: tokens, <eos> and <bksp> all count (default 128)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="cap on the generated length after backspaces")
    p.add_argument("--backspace-token", default=BACKSPACE_TOKEN,
                   help=f"the backspace action's token (default {BACKSPACE_TOKEN}); used when the tokenizer knows it")
    p.add_argument("--no-backspace", action="store_true", help="decode without backspace even if the token exists")
    p.add_argument("--greedy", action="store_true", help="take the most likely action (default: sample)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature > 0 (default 1.0)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely actions; 0 keeps all (default)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus mass in (0, 1]; 1.0 disables it (default)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (same seed, same output)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts decoded together (default 16)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument("--show-actions", action="store_true", help="also print every action, <bksp> included")
    p.add_argument("--json", action="store_true", help="print one JSON object per prompt (JSONL)")


def _load(model: str, tokenizer: str | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from seqlevel.presets import MODEL_PRESETS, byte_tokenizer, tiny_model

    if model in MODEL_PRESETS:
        tok = AutoTokenizer.from_pretrained(tokenizer) if tokenizer else byte_tokenizer(
            extra_special_tokens=[BACKSPACE_TOKEN])
        return tiny_model(model, tokenizer=tok), tok
    tok = AutoTokenizer.from_pretrained(tokenizer or model)
    return AutoModelForCausalLM.from_pretrained(model), tok


def _read_prompts(source: str) -> list[str]:
    if source == "-":
        lines = sys.stdin.read().splitlines()
    else:
        with open(source, encoding="utf-8") as f:
            lines = f.read().splitlines()
    if not lines:
        raise ValueError(f"no prompts in {'stdin' if source == '-' else source}; give one prompt per line")
    return lines


def _backspace_id(tok, args) -> int | None:
    if args.no_backspace:
        return None
    bid = tok.convert_tokens_to_ids(args.backspace_token)
    if bid is None or bid == tok.unk_token_id:
        if args.backspace_token != BACKSPACE_TOKEN:
            raise ValueError(f"the tokenizer has no token {args.backspace_token!r}; pass the backspace token the "
                             "model was trained with, or --no-backspace")
        return None  # a model without <bksp>: plain decoding
    return int(bid)


def _encode(tok, prompts: list[str]):
    import torch

    rows = []
    for text in prompts:
        ids = tok(text, add_special_tokens=True)["input_ids"] if text else []
        if not ids:
            if tok.bos_token_id is None:
                raise ValueError("an empty prompt needs a <bos> token, and this tokenizer has none; "
                                 "remove empty lines from the prompts")
            ids = [tok.bos_token_id]
        rows.append(ids)
    W = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (W - len(r)) + r for r in rows])  # left-padded (either side works)
    mask = torch.tensor([[0] * (W - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def cli_generate(args: argparse.Namespace) -> int:
    """Run ``seqlevel generate``: load, decode in batches, print texts (or JSONL)."""
    import torch

    from seqlevel.decoding.decoder import generate
    from seqlevel.decoding.sampling import check_sampling_options

    check_sampling_options(not args.greedy, args.temperature, args.top_k, args.top_p)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device} asked for, but CUDA is not available; use --device cpu")
    prompts = _read_prompts(args.prompts)
    model, tok = _load(args.model, args.tokenizer)
    model = model.to(args.device).eval()
    bksp = _backspace_id(tok, args)
    eos = tok.eos_token_id if tok.eos_token_id is not None else model.config.eos_token_id
    for start in range(0, len(prompts), args.batch_size):
        batch = prompts[start: start + args.batch_size]
        ids, mask = _encode(tok, batch)
        out = generate(model, ids, mask, max_new_actions=args.max_new_actions, max_new_tokens=args.max_new_tokens,
                       eos_token_id=eos, backspace_id=bksp, do_sample=not args.greedy, temperature=args.temperature,
                       top_k=args.top_k, top_p=args.top_p,
                       seed=None if args.seed is None else args.seed + start)
        for i, text in enumerate(batch):
            completion = tok.decode(out.sequences[i], skip_special_tokens=True)
            record = {
                "prompt": text,
                "completion": completion,
                "text": tok.decode(out.prompts[i] + out.sequences[i], skip_special_tokens=True),
                "actions": out.actions[i],
                "action_tokens": tok.convert_ids_to_tokens(out.actions[i]),
                "num_actions": int(out.num_actions[i]),
                "num_backspaces": int(out.num_backspaces[i]),
                "finished": bool(out.finished[i]),
                "stop_reason": out.stop_reasons[i],
            }
            if args.json:
                print(json.dumps(record, ensure_ascii=False))
                continue
            print(record["text"])
            if args.show_actions:
                print("  actions: " + " ".join(repr(t) for t in record["action_tokens"])
                      + f"  ({record['num_actions']} actions, {record['num_backspaces']} backspaces, "
                        f"{record['stop_reason']})")
    return 0
