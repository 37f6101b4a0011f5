"""The ``seqlevel`` command: the table of sub-commands, nothing else.

Each sub-command is a module of :mod:`seqlevel.commands` with ``add_arguments(parser)`` and ``run(args) -> int``;
it is imported only when that command runs (or is asked for ``--help``).
"""

from __future__ import annotations

from seqlevel import __version__
from seqlevel.commands import build_parser, dispatch

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, one-line help)
    "train": ("seqlevel.commands.train", "train a causal LM with MLE, MixCE, TaiLr, DFT, SequenceMatch or CAT"),
    "bench": ("seqlevel.commands.bench", "run a benchmark (speed ratios, known-P tasks)"),
    "generate": ("seqlevel.commands.generate", "decode prompts, with <bksp> when the model has it"),
    "evaluate": ("seqlevel.commands.evaluate",
                 "generate continuations of data prompts and compute MAUVE, diversity, perplexity, ..."),
    "demo": ("seqlevel.commands.demo", "the project's main job: each method on a task with known answers"),
    "explain": ("seqlevel.commands.explain",
                "per-token attribute estimates, credits and counterfactuals of a text (CAT)"),
}


def _parse(argv: list[str]):
    """The parsed arguments of ``argv`` (for tests of the parser alone)."""
    return build_parser(COMMANDS, description=__doc__.splitlines()[0], version=__version__).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return dispatch(build_parser(COMMANDS, description=__doc__.splitlines()[0], version=__version__), argv)


if __name__ == "__main__":
    raise SystemExit(main())
