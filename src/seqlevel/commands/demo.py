"""``seqlevel demo``: the project's main job (each method on a task with known answers), as one report."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="the small configuration the tests run (< 2 min)")
    p.add_argument("--output-dir", default="runs/demo", help="where the report and pictures go")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr (section lines stay)")
    from seqlevel.demo import DEFAULT_SECTIONS, SECTIONS  # the one list of sections

    p.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                   help=f"comma list of sections to run, from {','.join(SECTIONS)} (default: "
                        f"{','.join(DEFAULT_SECTIONS)}; arithmetic is opt-in)")


def run(args: argparse.Namespace) -> int:
    from seqlevel.bench import progress
    from seqlevel.demo import run_demo

    with progress.enabled(not args.no_progress):
        return run_demo(quick=args.quick, output_dir=args.output_dir,
                        sections=tuple(x for x in args.sections.split(",") if x))
