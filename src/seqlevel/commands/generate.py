"""``seqlevel generate``: decode prompts with :func:`seqlevel.decoding.generate`, from a file or stdin."""

from __future__ import annotations

import argparse
import json
import sys

from seqlevel.backspace.vocab import BACKSPACE_TOKEN


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``seqlevel generate``."""
    p.add_argument("--model", required=True,
                   help="Hugging Face model name or local path (e.g. a seqlevel train output dir), or a preset "
                        "(tiny-gpt2, tiny-llama, small-gpt2, small-llama: random weights, for smoke tests)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer name/path; defaults to the model's, or a byte-level tokenizer for presets")
    p.add_argument("--prompts", default="-",
                   help="a .txt file with one prompt per line, or '-' for stdin (default; an empty line is a <bos> "
                        "prompt); or a .jsonl/.json/.csv/.parquet file, save_to_disk directory or Hub dataset read "
                        "like `seqlevel train --dataset` (its 'prompt' column, else --prompt-field)")
    p.add_argument("--prompt-field", default="text", help="column of a dataset file holding the prompts (default text)")
    p.add_argument("--max-new-actions", type=int, default=128,
                   help="cap on actions per prompt: tokens, <eos> and <bksp> all count (default 128)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="cap on the generated length after backspaces")
    p.add_argument("--backspace-token", default=BACKSPACE_TOKEN,
                   help=f"the backspace action's token (default {BACKSPACE_TOKEN}); used when the tokenizer knows it")
    p.add_argument("--no-backspace", action="store_true", help="decode without backspace even if the token exists")
    p.add_argument("--greedy", action="store_true", help="take the most likely action (default: sample)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature > 0 (default 1.0); for the most likely action pass --greedy")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely actions; 0 keeps all (default)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus mass in (0, 1]; 1.0 disables it (default)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (same seed, same output)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts decoded together (default 16)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument("--show-actions", action="store_true", help="also print every action, <bksp> included")
    p.add_argument("--json", action="store_true", help="print one JSON object per prompt (JSONL)")
    p.add_argument("--allow-unk", action="store_true",
                   help="decode prompts with characters the tokenizer cannot encode (they become <unk>; without "
                        "this flag such a prompt is refused, naming the characters)")
    cat = p.add_argument_group("CAT steering (a model written by `seqlevel train --objective cat`)")
    cat.add_argument("--steer", choices=("product", "satisficing", "backtrack"), default=None,
                     help="steer towards --target with the model's attribute head: product = p(v)·P(a*|v)^alpha; "
                          "satisficing = sample among the top-20 candidates with P(a*|v) >= --threshold; "
                          "backtrack = <bksp> when a token's credit drops below -threshold (needs <bksp>)")
    cat.add_argument("--target", type=int, action="append", default=None, metavar="K",
                     help="the wanted class (binary head: 1 = attribute present; stars 1-5: star - 1); repeat it "
                          "for several classes, whose probabilities multiply")
    cat.add_argument("--alpha", type=float, action="append", default=None, metavar="A",
                     help="product weight alpha >= 0 (default 1.0): once for all targets or once per --target; "
                          "with backtrack, steers the ordinary steps with the product rule")
    cat.add_argument("--threshold", type=float, default=None, metavar="T",
                     help="satisficing: attribute probability a candidate needs (default 0.8); backtrack: the "
                          "credit drop that backs up (default 0.2)")


def _read_prompts(source: str, field: str) -> list[str]:
    if source == "-" or source.endswith(".txt"):
        if source == "-":
            lines = sys.stdin.read().splitlines()
        else:
            import os

            from seqlevel.data import _read_utf8  # names the file on bad bytes

            if not os.path.isfile(source):
                raise FileNotFoundError(f"prompts file {source!r} not found; give a file with one prompt per line, "
                                        "or '-' for stdin")
            lines = _read_utf8(source).splitlines()
        if not lines:
            raise ValueError(f"no prompts in {'stdin' if source == '-' else source}; give one prompt per line")
        return lines
    from seqlevel.data import load_text_dataset

    ds = load_text_dataset(source, field)
    col = "prompt" if "prompt" in ds.column_names else field
    if col not in ds.column_names:
        raise ValueError(f"prompts {source!r} have columns {ds.column_names} but no 'prompt' or {field!r} column; "
                         "pass --prompt-field COLUMN")
    return [str(x) for x in ds[col]]


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


def _check_encodable(tok, prompts: list[str]) -> None:
    """Refuse a prompt with characters the tokenizer turns into <unk> (the shown text would silently differ)."""
    from seqlevel.data import unencodable_characters

    for i, text in enumerate(prompts):
        bad = unencodable_characters(tok, text)
        if bad:
            raise ValueError(f"prompt {i + 1} ({text!r}) has characters the tokenizer cannot encode: "
                             f"{' '.join(repr(c) for c in bad)} (they would become {tok.unk_token}); remove them, "
                             "or pass --allow-unk to decode anyway")


def _shown_text(tok, prompt: str, prompt_ids: list[int], sequence: list[int]) -> str:
    """The prompt exactly as given, then the decoded continuation (never a re-decoded, altered prompt)."""
    head = tok.decode(prompt_ids, skip_special_tokens=True)
    full = tok.decode(prompt_ids + sequence, skip_special_tokens=True)
    tail = full[len(head):] if full.startswith(head) else tok.decode(sequence, skip_special_tokens=True)
    return prompt + tail


def _steer(args, model, bksp):
    """The CAT steer rule asked for on the command line, or None."""
    if args.steer is None:
        if args.target or args.alpha or args.threshold is not None:
            raise ValueError("--target/--alpha/--threshold steer a CAT model; add --steer product, satisficing or "
                             "backtrack")
        return None
    from seqlevel.attributes.steering import steering_rule

    return steering_rule(model, args.steer, args.target or [], args.alpha or [], args.threshold, bksp)


def _encode(tok, prompts: list[str], ctx: int | None):
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
    if ctx is not None and W >= ctx:
        raise ValueError(f"the longest prompt has {W} tokens but the model's context is {ctx} tokens, leaving no "
                         "room to generate; shorten the prompts")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (W - len(r)) + r for r in rows])  # left-padded (either side works)
    mask = torch.tensor([[0] * (W - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def run(args: argparse.Namespace) -> int:
    """Load, decode in batches, print texts (or JSONL)."""
    import torch

    from seqlevel.data import context_length, load_model_and_tokenizer
    from seqlevel.decoding.decoder import generate
    from seqlevel.decoding.sampling import check_sampling_options

    check_sampling_options(not args.greedy, args.temperature, args.top_k, args.top_p, flags=True)
    for flag, value in (("--max-new-actions", args.max_new_actions), ("--max-new-tokens", args.max_new_tokens)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if args.steer is None and (args.target or args.alpha or args.threshold is not None):
        _steer(args, None, None)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    try:
        torch.device(args.device)
    except RuntimeError as e:
        raise ValueError(f"--device {args.device!r} is not a torch device ({e}); use cpu or cuda") from e
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device} asked for, but CUDA is not available; use --device cpu")
    prompts = _read_prompts(args.prompts, args.prompt_field)
    model, tok = load_model_and_tokenizer(args.model, args.tokenizer, preset_backspace=args.steer is None,
                                          attribute=args.steer is not None)
    model = model.to(args.device).eval()
    bksp = _backspace_id(tok, args)
    steer = _steer(args, model, bksp)
    lm = model.base if steer is not None else model  # a CAT model decodes with its base LM
    if not args.allow_unk:
        _check_encodable(tok, prompts)
    eos = tok.eos_token_id if tok.eos_token_id is not None else lm.config.eos_token_id
    never = [tok.pad_token_id, tok.unk_token_id]  # not actions (an id that is also <eos> stays: GPT-2 pads with it)
    ctx = context_length(lm)
    for start in range(0, len(prompts), args.batch_size):
        batch = prompts[start: start + args.batch_size]
        ids, mask = _encode(tok, batch, ctx)
        out = generate(lm, ids.to(args.device), mask.to(args.device), max_new_actions=args.max_new_actions,
                       max_new_tokens=args.max_new_tokens, eos_token_id=eos, backspace_id=bksp,
                       do_sample=not args.greedy, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                       seed=None if args.seed is None else args.seed + start, steer=steer, suppress_ids=never)
        for i, text in enumerate(batch):
            record = {
                "prompt": text,
                "completion": tok.decode(out.sequences[i], skip_special_tokens=True),
                "text": _shown_text(tok, text, out.prompts[i], out.sequences[i]),
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
