"""``seqlevel evaluate``: generate continuations of data prompts and compute MAUVE, diversity, perplexity, ..."""

from __future__ import annotations

import argparse
import json
import os


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory (e.g. a seqlevel train output), Hub name or preset")
    p.add_argument("--data", required=True,
                   help="a .txt/.jsonl/.json/.csv/.parquet file, a datasets.save_to_disk directory or a Hub name "
                        "(read by the same loader as `seqlevel train --dataset`)")
    p.add_argument("--text-field", "--dataset-text-field", default="text",
                   help="column of text records (default text); records may instead hold prompt + completion "
                        "(the model continues the prompt), messages (chat, rendered with the tokenizer's chat "
                        "template) or input_ids, as for `seqlevel train`")
    p.add_argument("--data-config", "--dataset-config", default=None, help="configuration of a Hub dataset")
    p.add_argument("--data-split", "--dataset-split", default=None,
                   help="split of a Hub dataset or save_to_disk DatasetDict (default train)")
    p.add_argument("--prompt-tokens", type=int, default=50,
                   help="prompt length in tokens for text records (default 50, MixCE's); prompt + completion and "
                        "chat records use their own prompt")
    p.add_argument("--num-samples", type=int, default=100, help="examples to continue (default 100)")
    p.add_argument("--max-new-actions", type=int, default=128, help="cap on generated actions (default 128)")
    p.add_argument("--backspace", action="store_true", default=None,
                   help="require decoding with <bksp> (default: used automatically when the model has it)")
    p.add_argument("--no-backspace", dest="backspace", action="store_false", help="decode without <bksp>")
    p.add_argument("--featurizer", default=None, help="local model for MAUVE features (default: the evaluated model)")
    p.add_argument("--no-mauve", action="store_true", help="skip MAUVE (no mauve-text needed)")
    p.add_argument("--mauve-seeds", type=int, default=5, help="k-means seeds; MAUVE is reported as mean ± std")
    p.add_argument("--mauve-max-tokens", type=int, default=None,
                   help="truncate model and reference texts to this many featurizer tokens (default: the shorter "
                        "side's median length)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default="runs/evaluate", help="where metrics.json and report.md go")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    from seqlevel.metrics.evaluate import EvalConfig, _report, evaluate_model

    cfg = EvalConfig(model=args.model, data=args.data, prompt_tokens=args.prompt_tokens, num_samples=args.num_samples,
                     max_new_actions=args.max_new_actions, backspace=args.backspace, featurizer=args.featurizer,
                     mauve=not args.no_mauve, seed=args.seed, output_dir=args.output_dir,
                     mauve_seeds=args.mauve_seeds, mauve_max_tokens=args.mauve_max_tokens,
                     text_field=args.text_field, data_config=args.data_config, data_split=args.data_split)
    metrics = evaluate_model(cfg)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(_report(metrics, [], []))
        print(f"wrote {os.path.join(cfg.output_dir, 'metrics.json')} and report.md")
    return 0
