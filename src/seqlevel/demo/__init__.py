"""``seqlevel demo``: the project's main job, each method on a task with known answers, as one report.

Sections, one module each:

* (a) :mod:`.markov`: MLE vs MixCE (η sweep) vs the exact reverse-CE objective MixCE* on a bigram world with
  known P: what each does to the JS divergence and to the mass on impossible transitions.
* (b) :mod:`.sequencematch`: MLE vs BC vs SequenceMatch on a bigram world with known P: the final-text rate of
  impossible bigrams after ``<bksp>`` (compounding error).
* (c) :mod:`.arithmetic` (not in the default run; ``--sections ...,arithmetic``): MLE vs BC vs SequenceMatch
  fine-tuned from one MLE checkpoint on add-or-subtract-in-base with noise, with printed repair examples. At demo
  size every model stays near 5% accuracy, which teaches a newcomer nothing; ``seqlevel bench arithmetic`` is
  where that comparison lives.
* (d) :mod:`.cat`: CAT on Key-to-Door (win rate against BC and %BC) and on the reviews language (estimation
  speed-up over Monte-Carlo sampling, steering, and a per-token credit picture).

Writes ``report.md``, ``metrics.json`` and the PNG figures into ``output_dir``. Every file is written under a
temporary name and moved into place only after all sections have finished, so a failed or interrupted demo
never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import torch

from seqlevel.bench import progress
from seqlevel.demo.section import Section

SECTIONS = ("markov", "sequencematch", "arithmetic", "cat")  # every section there is
DEFAULT_SECTIONS = ("markov", "sequencematch", "cat")  # what `seqlevel demo` runs


def _section(name: str, quick: bool, workdir: str) -> Section:
    if name == "markov":
        from seqlevel.demo.markov import section_markov

        return section_markov(quick)
    if name == "sequencematch":
        from seqlevel.demo.sequencematch import section_sequencematch

        return section_sequencematch(quick)
    if name == "arithmetic":
        from seqlevel.demo.arithmetic import section_arithmetic

        return section_arithmetic(quick, workdir=workdir)
    from seqlevel.demo.cat import section_cat

    return section_cat(quick, workdir=workdir)


def _write_atomic(files: dict[str, bytes], output_dir: str) -> None:
    """Write every file under a temporary name first, then move them all into place."""
    tmp = {}
    try:
        for name, data in files.items():
            path = os.path.join(output_dir, f".{name}.tmp-{os.getpid()}")
            with open(path, "wb") as f:
                f.write(data)
            tmp[name] = path
        for name, path in tmp.items():
            os.replace(path, os.path.join(output_dir, name))
    finally:
        for path in tmp.values():
            if os.path.exists(path):
                os.remove(path)


def _summary_table(sections: list[Section]) -> str:
    rows = [row for s in sections for row in s.metrics.get("headline", [])]
    if not rows:
        return ""
    w = max(len(r[0]) for r in rows)
    lines = [f"{'what':<{w}}  result", f"{'-' * w}  {'-' * 40}"] + [f"{a:<{w}}  {b}" for a, b in rows]
    return "\n".join(lines)


def run_demo(quick: bool = False, output_dir: str = "runs/demo", sections: tuple[str, ...] = DEFAULT_SECTIONS) -> int:
    """Run every section, print the tables, write ``report.md``, ``metrics.json`` and figures.

    Args:
        quick: the small configuration the tests run (< 2 min on 2 CPU cores); default < 10 min.
        output_dir: created if missing; existing files of the same names are replaced.
        sections: which sections to run (default ``DEFAULT_SECTIONS``: markov, sequencematch, cat; ``SECTIONS``
            also has arithmetic).

    Returns:
        Exit status 0.
    """
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown demo section(s) {unknown}; choose from {SECTIONS}")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise NotADirectoryError(f"--output-dir {output_dir!r} exists and is not a directory; pick another path")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    t0 = time.perf_counter()
    done: list[Section] = []
    with tempfile.TemporaryDirectory(prefix="seqlevel-demo-") as workdir, progress.quiet_libraries():
        for i, name in enumerate(sections, 1):
            print(f"[{i}/{len(sections)}] {name} ...", file=sys.stderr, flush=True)
            ts = time.perf_counter()
            sec = _section(name, quick, workdir)
            sec.metrics["seconds"] = time.perf_counter() - ts
            done.append(sec)
            print(f"[{i}/{len(sections)}] {name} done in {sec.metrics['seconds']:.0f} s", file=sys.stderr, flush=True)
    total = time.perf_counter() - t0
    summary = _summary_table(done)
    report = ["# seqlevel demo", "", f"Configuration: {'quick' if quick else 'default'}; total {total:.0f} s "
              "on this machine.", ""]
    if summary:
        report += ["## Summary", "", "```", summary, "```", ""]
    report += [s.markdown for s in done]
    files = {"report.md": "\n".join(report).encode(),
             "metrics.json": json.dumps({s.title: s.metrics for s in done}, indent=1, default=str).encode()}
    for s in done:
        files.update(s.figures)
    os.makedirs(output_dir, exist_ok=True)
    _write_atomic(files, output_dir)
    for s in done:
        print(s.markdown)
    if summary:
        print("Summary\n" + summary)
    print(f"wrote {', '.join(sorted(files))} to {output_dir} ({total:.0f} s)")
    return 0
