"""What every demo section returns, and how the bench runners are reused by the demo."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from dataclasses import dataclass, field


@dataclass
class Section:
    """One part of the report: markdown text, metrics for ``metrics.json`` and figures (PNG bytes)."""

    title: str
    markdown: str
    metrics: dict
    figures: dict[str, bytes] = field(default_factory=dict)


def run_bench_json(name: str, argv: list[str]) -> dict:
    """Run ``seqlevel bench NAME ARGV --json`` in-process and return its JSON object.

    The demo reuses each benchmark's own runner (same options, same defaults) instead of a second copy of it.
    """
    from seqlevel.bench import load

    module = load(name)
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    args = parser.parse_args([*argv, "--json"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = module.run(args)
    if rc != 0:
        raise RuntimeError(f"bench {name} {' '.join(argv)} exited with status {rc}")
    return json.loads(out.getvalue().strip().splitlines()[-1])


def figure_png(fig, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (closed afterwards): what ``Section.figures`` holds."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
