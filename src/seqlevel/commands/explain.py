"""``seqlevel explain``: per-token attribute estimates, credits and counterfactuals of one text (CAT)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="a CAT model directory: written by `seqlevel train --objective cat` "
                        "(AttributeModel.save_pretrained)")
    p.add_argument("--text", required=True,
                   help="the text to explain, at most the model's context length in tokens: it is read in one pass, "
                        "so a longer text is refused (no sliding window); the PNG wraps it into rows of 40 tokens")
    p.add_argument("--tokenizer", default=None, help="tokenizer name/path (default: the model directory)")
    p.add_argument("--target", type=int, default=None, help="class whose credit/deltas are shown")
    p.add_argument("--positions", type=int, nargs="*", default=None,
                   help="token positions for counterfactuals (default: the 3 largest |credit|)")
    p.add_argument("--top", type=int, default=3, help="alternatives per position (default 3)")
    p.add_argument("--output", default="explain.png", help="where the PNG goes (default explain.png)")


def _unknown_words(tokenizer, text: str) -> list[str]:
    """Words of ``text`` that the tokenizer maps to its ``<unk>`` token."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return []
    return [w for w in text.split() if unk in tokenizer(w, add_special_tokens=False)["input_ids"]]


def run(args: argparse.Namespace) -> int:
    """Load a saved AttributeModel + tokenizer, warn about out-of-vocabulary words, print the table, write the PNG."""
    import os

    from seqlevel.attributes.explain import explain
    from seqlevel.data import load_model_and_tokenizer

    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    if not args.text.strip():
        raise ValueError("--text is empty; give the text to explain")
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        raise ValueError(f"--output {args.output!r}: directory {out_dir!r} does not exist; create it first")
    model, tokenizer = load_model_and_tokenizer(args.model, args.tokenizer, attribute=True)
    model.eval()
    oov = _unknown_words(tokenizer, args.text)
    if oov:
        print(f"warning: {len(oov)} word(s) are not in the model's vocabulary and are explained as "
              f"{tokenizer.unk_token}: {', '.join(sorted(set(oov)))}", file=sys.stderr)
    ex = explain(model, tokenizer, args.text, target=args.target, positions=args.positions, top=args.top,
                 output_png=args.output)
    print(ex.table())
    print(f"figure written to {args.output}")
    return 0
