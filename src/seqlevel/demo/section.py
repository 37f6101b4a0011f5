"""What every demo section returns, and how its figures are encoded."""

from __future__ import annotations

import io
from dataclasses import dataclass, field


@dataclass
class Section:
    """One part of the report: markdown text, metrics for ``metrics.json`` and figures (PNG bytes)."""

    title: str
    markdown: str
    metrics: dict
    figures: dict[str, bytes] = field(default_factory=dict)


def figure_png(fig, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (closed afterwards): what ``Section.figures`` holds."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
