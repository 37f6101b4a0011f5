"""``seqlevel explain``: per-token attribute estimates, credits and top counterfactuals of one text, as a table + PNG.

Everything comes from one forward pass of an :class:`~seqlevel.attributes.AttributeModel` (notes §2.2-2.3): the
estimate ``P(a | x≤t)``, the expectation before the token ``E_t`` and the credit ``c_t = P(a | x≤t) − E_t``; at
chosen positions, the most likely alternatives ``v`` and their deltas ``P(a | x<t, v) − P(a | x≤t)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqlevel.attributes.estimate import Counterfactual, counterfactuals, trace
from seqlevel.attributes.model import AttributeModel
from seqlevel.decoding.decoder import context_length

ROW_TOKENS = 40  # tokens per row of the figure: a long text wraps instead of becoming one very wide image


@dataclass
class Explanation:
    """``tokens``; ``estimate``/``credit`` ``(T, K)`` (row 0 NaN); ``counterfactuals``: position -> rows."""

    tokens: list[str]
    estimate: torch.Tensor
    credit: torch.Tensor
    token_probs: torch.Tensor
    target: int
    counterfactuals: dict[int, list[Counterfactual]]

    def table(self) -> str:
        """A plain-text table: one line per token, then the counterfactual blocks."""
        K = self.estimate.shape[-1]
        head = "  t  token            p(x_t)   " + " ".join(f"P(a={k})" for k in range(K)) + f"   credit(a={self.target})"
        lines = [head]
        for t, tok in enumerate(self.tokens):
            if t == 0:
                lines.append(f"{t:3d}  {tok:<15s}       -   (prefix start)")
                continue
            est = " ".join(f"{float(v):6.3f}" for v in self.estimate[t])
            lines.append(f"{t:3d}  {tok:<15s}  {float(self.token_probs[t]):6.3f}   {est}   "
                         f"{float(self.credit[t, self.target]):+7.3f}")
        for pos, rows in self.counterfactuals.items():
            lines.append(f"counterfactuals at t={pos} (realised {self.tokens[pos]!r}): token, p, Δ P(a={self.target})")
            for r in rows[1:]:
                lines.append(f"     {self._name(r.token_id):<15s}  {r.prob:6.3f}   {r.delta[self.target]:+7.3f}")
        return "\n".join(lines)

    _names: dict[int, str] | None = None

    def _name(self, token_id: int) -> str:
        return (self._names or {}).get(token_id, str(token_id))


def explain(model: AttributeModel, tokenizer, text: str, *, target: int | None = None,
            positions: list[int] | None = None, top: int = 3, output_png: str | None = None) -> Explanation:
    """Explain ``text`` under ``model``: estimates, credits and counterfactual alternatives.

    Args:
        model: an :class:`AttributeModel`. tokenizer: its tokenizer (``<bos>`` is prepended if it has one and the
            text does not start with it).
        target: the class whose credit and deltas are reported (default: 1 for binary, the last class for
            categorical, the mean for numeric).
        positions: where to list counterfactuals (default: the 3 tokens with the largest |credit|).
        top: alternatives per position (the most likely under p).
        output_png: where to write the figure (nothing is written if None).

    Returns:
        An :class:`Explanation` (``.table()`` for the printed form).
    """
    K = model.head.config.num_classes if model.kind != "numeric" else 2
    if target is None:
        target = {"binary": 1, "categorical": K - 1, "numeric": 0}[model.kind]
    if not 0 <= target < K:
        raise ValueError(f"target class {target} is not one of the head's classes 0..{K - 1}")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    if len(ids) < 2:
        raise ValueError(f"text {text!r} has fewer than 2 tokens after tokenisation; nothing to explain")
    ctx = context_length(model.base)
    if ctx is not None and len(ids) > ctx:
        raise ValueError(f"the text has {len(ids)} tokens but the model's context is {ctx} positions; explain reads "
                         f"the whole text in one pass (no sliding window), so shorten it to at most {ctx} tokens")
    x = torch.tensor(ids, device=next(model.parameters()).device)
    tr = trace(model, x[None])
    est, credit, tp = tr.estimate[0].cpu(), tr.credit[0].cpu(), tr.token_probs[0].cpu()
    if positions is None:
        order = credit[1:, target].abs().argsort(descending=True) + 1
        positions = sorted(int(t) for t in order[:3])
    for pos in positions:
        if not 1 <= pos < len(ids):
            raise ValueError(f"position {pos} is outside 1..{len(ids) - 1} (position 0 is the first token)")
    cfs = {pos: counterfactuals(model, x, pos, top=top, target=target) for pos in positions}
    tokens = [_label(tokenizer, i) for i in ids]
    ex = Explanation(tokens=tokens, estimate=est, credit=credit, token_probs=tp, target=target, counterfactuals=cfs)
    ex._names = {r.token_id: _label(tokenizer, r.token_id) for rows in cfs.values() for r in rows}
    if output_png:
        _plot(ex, output_png, model.kind, text)
    return ex


def _label(tokenizer, token_id: int) -> str:
    """A token as a reader sees it: detokenised (``Ġfood`` -> ``food``), whitespace drawn (``␣``, ``⏎``)."""
    text = tokenizer.decode([token_id])
    if not text:
        return str(tokenizer.convert_ids_to_tokens(token_id))
    text = text.replace("\n", "⏎").replace("\t", "⇥")
    return text.strip() if text.strip() else text.replace(" ", "␣")


def _plot(ex: Explanation, path: str, kind: str, text: str) -> None:
    """Estimates (top) and credits (bottom) per row of at most :data:`ROW_TOKENS` tokens, one legend, a title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = len(ex.tokens)
    starts = list(range(1, T, ROW_TOKENS))
    width = max(6.0, 0.42 * min(T - 1, ROW_TOKENS) + 1.5)  # inches; 40 tokens -> 18.3 in = 1830 px at dpi 100
    fig, axes = plt.subplots(2 * len(starts), 1, figsize=(width, 3.6 * len(starts) + 0.8), squeeze=False,
                             gridspec_kw={"height_ratios": [1.2, 1] * len(starts)})
    lo, hi = float(ex.credit[1:, ex.target].min()), float(ex.credit[1:, ex.target].max())
    pad = 0.05 * max(hi - lo, 1e-3)
    for r, a in enumerate(starts):
        b = min(a + ROW_TOKENS, T)
        ax1, ax2 = axes[2 * r, 0], axes[2 * r + 1, 0]
        xs = list(range(a, b))
        if kind == "numeric":
            ax1.plot(xs, ex.estimate[a:b, 0].numpy(), marker="o", label="mean")
        else:
            for k in range(ex.estimate.shape[-1]):
                ax1.plot(xs, ex.estimate[a:b, k].numpy(), marker="o", lw=2.5 if k == ex.target else 1,
                         label=f"P(a={k})" + (" (target)" if k == ex.target else ""))
            ax1.set_ylim(-0.02, 1.02)
        ax1.set_ylabel("estimate", fontsize=10)
        ax1.set_xlim(a - 0.6, a + ROW_TOKENS - 0.4)
        ax1.set_xticks(xs)
        ax1.set_xticklabels([])
        c = ex.credit[a:b, ex.target].numpy()
        ax2.bar(xs, c, color=["tab:green" if v >= 0 else "tab:red" for v in c])
        ax2.axhline(0, color="k", lw=0.5)
        ax2.set_ylim(min(lo, 0) - pad, max(hi, 0) + pad)  # one scale for every row
        ax2.set_xlim(a - 0.6, a + ROW_TOKENS - 0.4)
        ax2.set_ylabel(f"credit (a={ex.target})", fontsize=10)
        ax2.set_xticks(xs)
        ax2.set_xticklabels(ex.tokens[a:b], rotation=60, ha="right", fontsize=10)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper right", fontsize=11, ncol=min(len(names), 6), frameon=False)
    shown = text if len(text) <= 90 else text[:87] + "..."
    fig.suptitle(f"{shown!r}   target a={ex.target}", x=0.01, ha="left", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / (3.6 * len(starts) + 0.8)))
    fig.savefig(path, dpi=100)
    plt.close(fig)
