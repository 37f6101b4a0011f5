"""The ``seqlevel`` command. It parses arguments and calls the library; it holds no logic of its own.

Sub-commands: ``train``, ``bench NAME``, ``demo``. Benchmarks define their own options beside their code
(``seqlevel.bench.BENCHMARKS``), so each option's meaning has one source.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from seqlevel import __version__
from seqlevel.bench import BENCHMARKS


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a causal LM with a sequence-level objective",
                       description="Train any AutoModelForCausalLM (or a tiny preset) with MLE, MixCE, TaiLr or DFT.")
    p.add_argument("--objective", default="mixce",
                   help="mle | mixce | tailr | dft | sequencematch (default mixce)")
    p.add_argument("--model", required=True,
                   help="Hugging Face model name or local path, or a preset: tiny-gpt2, tiny-llama, small-gpt2, small-llama")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer name/path; defaults to the model's, or a byte-level tokenizer for presets")
    p.add_argument("--dataset", required=True,
                   help="a .txt file (one example per line), a .jsonl/.json file with a 'text' or 'input_ids' "
                        "field, or a directory saved with datasets.save_to_disk; with --objective sequencematch "
                        "also 'arithmetic' (5,000 add_or_sub_in_base questions and their character tokenizer)")
    p.add_argument("--output-dir", required=True, help="where checkpoints and the final model are written")
    p.add_argument("--mixce-eta", type=float, default=None, help="MixCE mixing ratio η in [0, 1] (1 = MLE)")
    p.add_argument("--tailr-gamma", type=float, default=None, help="TaiLr γ in [0, 1] (0 = MLE)")
    p.add_argument("--tailr-w-min", type=float, default=None, help="TaiLr weight floor in [0, 1]")
    p.add_argument("--max-length", type=int, default=None, help="truncate examples to this many tokens")
    p.add_argument("--epochs", type=float, default=1.0, help="training epochs (default 1)")
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimizer steps")
    p.add_argument("--batch-size", type=int, default=8, help="per-device train batch size")
    p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--lr", type=float, default=5e-5, help="learning rate (default 5e-5, the MixCE paper's)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--save-steps", type=int, default=500)
    p.add_argument("--resume", action="store_true", help="resume from the last checkpoint in --output-dir")
    sm = p.add_argument_group("sequencematch", "options of --objective sequencematch (SequenceMatchConfig fields)")
    sm.add_argument("--p-noise", type=float, default=None, help="noise insertion probability per data action")
    sm.add_argument("--noise-type", default=None, choices=("random", "task"),
                    help="random tokens, or the task's ground-truth noise (--dataset arithmetic only)")
    sm.add_argument("--bc-warmup-steps", type=int, default=None, help="behaviour-cloning steps before SequenceMatch")
    sm.add_argument("--sm-weight", type=float, default=None, help="convex weight w of SM: (1-w) BC + w SM")
    sm.add_argument("--gamma", type=float, default=None, help="discount in (0, 1); the paper used 0.998")
    sm.add_argument("--divergence", default=None, help="chi2_mix (default) | chi2 | kl | reverse_kl | js | hellinger | tv")
    sm.add_argument("--sample-every", type=int, default=None, help="optimizer steps between rollout refreshes")
    sm.add_argument("--rollouts-per-refresh", type=int, default=None, help="rollouts generated per refresh")
    sm.add_argument("--replay-buffer-size", type=int, default=None, help="most model rollouts kept")
    sm.add_argument("--max-new-actions", type=int, default=None, help="cap on actions per rollout")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark (speed ratios, known-P tasks)")
    bsub = p.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name, (_module, help_text) in BENCHMARKS.items():  # noqa: B007
        # Options are defined beside the runner and added in _parse, importing only the one asked for.
        bsub.add_parser(name, help=help_text, description=help_text)


def _add_generate(sub) -> None:
    from seqlevel.decoding.cli import add_arguments  # argparse only; torch is imported when it runs

    p = sub.add_parser("generate", help="decode prompts, with <bksp> when the model has it",
                       description="Generate from a causal LM with the backtracking decoder (seqlevel.decoding).")
    add_arguments(p)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="generate continuations of data prompts and compute MAUVE, diversity, ...",
                       description="Generate continuations of data prompts (with <bksp> when the model has it) and "
                                   "write metrics.json and report.md.")
    p.add_argument("--model", required=True, help="model directory (e.g. a seqlevel train output), Hub name or preset")
    p.add_argument("--data", required=True, help="a .txt/.jsonl/.json file or a datasets.save_to_disk directory")
    p.add_argument("--prompt-tokens", type=int, default=50, help="prompt length in tokens (default 50, MixCE's)")
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


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the project's main job: each method on a task with known answers")
    p.add_argument("--quick", action="store_true", help="the small configuration the tests run (< 2 min)")
    p.add_argument("--output-dir", default="runs/demo", help="where the report and pictures go")
    p.add_argument("--sections", default="markov,sequencematch,arithmetic,cat",
                   help="comma list of sections to run (default all: markov,sequencematch,arithmetic,cat)")


def _add_explain(sub) -> None:
    p = sub.add_parser("explain", help="per-token attribute estimates, credits and counterfactuals of a text (CAT)")
    p.add_argument("--model", required=True, help="directory written by AttributeModel.save_pretrained")
    p.add_argument("--text", required=True, help="the text to explain")
    p.add_argument("--tokenizer", default=None, help="tokenizer name/path (default: the model directory)")
    p.add_argument("--target", type=int, default=None, help="class whose credit/deltas are shown")
    p.add_argument("--positions", type=int, nargs="*", default=None,
                   help="token positions for counterfactuals (default: the 3 largest |credit|)")
    p.add_argument("--top", type=int, default=3, help="alternatives per position (default 3)")
    p.add_argument("--output", default="explain.png", help="where the PNG goes (default explain.png)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqlevel", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"seqlevel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train(sub)
    _add_bench(sub)
    _add_generate(sub)
    _add_evaluate(sub)
    _add_demo(sub)
    _add_explain(sub)
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if len(argv) >= 2 and argv[0] == "bench" and argv[1] in BENCHMARKS:
        # second pass with the benchmark's own options added
        module = importlib.import_module(BENCHMARKS[argv[1]][0])
        bp = argparse.ArgumentParser(prog=f"seqlevel bench {argv[1]}", description=BENCHMARKS[argv[1]][1])
        module.add_arguments(bp)
        args = bp.parse_args(argv[2:])
        args.command, args.bench, args._module = "bench", argv[1], module
        return args
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        if args.command == "bench":
            return args._module.run(args)
        if args.command == "train":
            from seqlevel.trainers.recipes import train_from_cli

            return train_from_cli(args)
        if args.command == "generate":
            from seqlevel.decoding.cli import cli_generate

            return cli_generate(args)
        if args.command == "evaluate":
            from seqlevel.metrics.evaluate import cli_evaluate

            return cli_evaluate(args)
        if args.command == "explain":
            from seqlevel.attributes.explain import cli_explain

            return cli_explain(args)
        if args.command == "demo":
            from seqlevel.demo import run_demo

            return run_demo(quick=args.quick, output_dir=args.output_dir,
                            sections=tuple(x for x in args.sections.split(",") if x))
    except (ValueError, ImportError, FileNotFoundError, NotADirectoryError, FileExistsError) as err:
        # Bad input: one clear line, no traceback, exit status 2 (argparse's convention).
        print(f"seqlevel {args.command}: error: {err}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled command {args.command}")  # argparse guarantees a known command


if __name__ == "__main__":
    raise SystemExit(main())
