"""The CAT attribute head: for every position t and every vocabulary item v, the attribute if v came next.

CAT (Stutz et al. 2026, notes §1.2) splits a causal LM's final hidden state ``h_t`` into the usual token head and
an "attribute block + attribute head" whose output is indexed by the candidate next token. A Director-style
``Linear(d, V·K)`` would cost ``d·V·K`` parameters (3·10⁹ for d=4096, V=150k, K=5), so the output here is
**factorised** (notes §1.2 [I]: ``attr[t, v, k] = <g(h_t), W[v, k]> + b[v, k]`` with ``W`` low-rank):

    z_t            = block(h_t)                       # attribute block: LayerNorm -> Linear -> GELU -> Linear, (B, T, m)
    q_t[k]         = Q_k z_t                          # one rank-r query per output channel, (B, T, n_out, r)
    c_t[k]         = C_k z_t                          # candidate-independent part (the prefix's own value)
    attr[t, v, k]  = q_t[k] · E[v] + b[v, k] + c_t[k] # E: (V, r) token keys, b: (V, n_out) token biases

Parameters: ``V·(r + n_out)`` for the vocabulary-indexed part plus ``d·m + m² + m·n_out·(r + 1)`` for the block,
e.g. 5.6 M for V=150k, r=32, K=5 (the LM head itself is ``d·V`` = 614 M at d=4096). The outputs per (t, v) are
``n_out`` channels: 1 logit for ``binary``, ``K`` logits for ``categorical``, and ``(mean, log variance)`` for
``numeric`` (a Gaussian). Training needs the head only at the realised next token (:meth:`AttributeHead.gathered`,
``O(B·T·n_out·r)``); inference over all candidates (:meth:`AttributeHead.all_candidates`) is one
``(B·T, r) x (r, V)`` matmul per channel.

With ``dueling`` (:class:`AttributeHeadConfig`) ``E`` and ``b`` are centred over a candidate set before use, so
``c_t`` is the state value and ``q_t · E[v] + b[v]`` a zero-mean advantage over the candidates.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

KINDS = ("binary", "categorical", "numeric")


@dataclass
class AttributeHeadConfig:
    """Shape of an :class:`AttributeHead`; saved as ``attribute_head_config.json`` beside the base model.

    Args:
        kind: ``"binary"``, ``"categorical"`` or ``"numeric"`` (Gaussian mean and variance).
        vocab_size: the base model's output vocabulary V (checked on load).
        hidden_size: the trunk's hidden size d.
        num_classes: K for ``categorical`` (>= 2); 2 for ``binary`` (classes 0/1); ignored for ``numeric``.
        rank: r, width of the token keys ``E (V, r)``.
        block_size: m, width of the attribute block; default ``hidden_size``.
        query_std: init std of the queries ``Q_k``. Small values start the candidate-dependent term near 0, so
            early training fills the prefix term and the token biases first.
        context_window: ``W``: in every layer of the *trunk*, each position attends to itself and the ``W - 1``
            positions before it (a banded causal mask, as in sliding-window attention; usual position ids), so
            over ``L`` layers a position sees the last ``L·(W - 1) + 1`` tokens; ``W = 1``: the token itself only.
            ``None`` = full causal attention. Stored here so that it is saved with the head and applied identically
            in training, estimation and play by :meth:`AttributeModel.forward`. On Key-to-Door ``W = 1`` makes the
            trunk see exactly the Markov state (observation token + its position), so it cannot memorise histories.
        dueling: the dueling parametrisation (Wang et al. 2016): ``attr[t, v, k] = c_t[k] + A_t[v, k] − mean_{u ∈ C}
            A_t[u, k]`` with the advantage ``A_t[v, k] = q_t[k] · E[v] + b[v, k]``, i.e. the token keys and biases
            are centred over the candidate set C before use. The candidate-independent part ``c_t`` then carries the
            state value alone, and the advantages, zero-mean over C, carry only what differs between candidates; on
            Key-to-Door this isolates the tiny action effect (median Q^β gap 0.007) from the large state term.
            Same parameters and cost as the plain head.
        dueling_candidates: the token ids C the advantage is centred over (e.g. the four action tokens); ``None`` =
            the whole vocabulary. Only used with ``dueling``.
    """

    kind: str = "binary"
    vocab_size: int = 0
    hidden_size: int = 0
    num_classes: int = 2
    rank: int = 32
    block_size: int | None = None
    query_std: float = 0.02
    context_window: int | None = None
    dueling: bool = False
    dueling_candidates: list[int] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "binary":
            self.num_classes = 2
        if self.kind == "categorical" and self.num_classes < 2:
            raise ValueError(f"a categorical head needs num_classes >= 2, got {self.num_classes}; "
                             "use kind='binary' for a yes/no attribute")
        if self.vocab_size < 1 or self.hidden_size < 1:
            raise ValueError(f"vocab_size and hidden_size must be >= 1, got {self.vocab_size}, {self.hidden_size}; "
                             "build the config from the base model (AttributeModel.for_base does this)")
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if self.block_size is None:
            self.block_size = self.hidden_size
        if self.context_window is not None and self.context_window < 1:
            raise ValueError(f"context_window must be None (full causal attention) or >= 1, got "
                             f"{self.context_window}; 1 lets each position see only itself")
        if self.dueling_candidates is not None:
            self.dueling_candidates = [int(v) for v in self.dueling_candidates]
            if not self.dueling_candidates or not all(0 <= v < self.vocab_size for v in self.dueling_candidates):
                raise ValueError(f"dueling_candidates must be a non-empty list of token ids in [0, {self.vocab_size})"
                                 f", got {self.dueling_candidates}; None centres over the whole vocabulary")

    @property
    def num_outputs(self) -> int:
        """Channels per (position, candidate): 1 (binary), K (categorical), 2 (numeric mean, log variance)."""
        return {"binary": 1, "categorical": self.num_classes, "numeric": 2}[self.kind]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> AttributeHeadConfig:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class AttributeHead(nn.Module):
    """Vocabulary-indexed attribute head over a trunk hidden state (see the module docstring for the formula)."""

    def __init__(self, config: AttributeHeadConfig):
        super().__init__()
        self.config = config
        d, m, r, n = config.hidden_size, config.block_size, config.rank, config.num_outputs
        self.block = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, m), nn.GELU(), nn.Linear(m, m))
        self.query = nn.Linear(m, n * r)  # Q_k stacked
        self.prefix = nn.Linear(m, n)  # C_k stacked
        self.token_keys = nn.Parameter(torch.randn(config.vocab_size, r) * r**-0.5)  # E (V, r)
        self.token_bias = nn.Parameter(torch.zeros(config.vocab_size, n))  # b (V, n_out)
        nn.init.normal_(self.query.weight, std=config.query_std)
        nn.init.zeros_(self.query.bias)
        nn.init.zeros_(self.prefix.weight)
        nn.init.zeros_(self.prefix.bias)

    def keys_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The token keys ``E (V, r)`` and biases ``b (V, n_out)`` the outputs use: the parameters themselves, or
        with ``dueling`` both centred over the candidate set (so the advantage's mean over it is 0)."""
        E, b = self.token_keys, self.token_bias
        if not self.config.dueling:
            return E, b
        C = self.config.dueling_candidates
        if C is None:
            return E - E.mean(0), b - b.mean(0)
        idx = torch.as_tensor(C, device=E.device)
        return E - E[idx].mean(0), b - b[idx].mean(0)

    def features(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``hidden (..., d)`` -> queries ``(..., n_out, r)`` and candidate-independent part ``(..., n_out)``."""
        z = self.block(hidden.to(self.token_keys.dtype))  # (..., m)
        q = self.query(z).unflatten(-1, (self.config.num_outputs, self.config.rank))
        return q, self.prefix(z)

    def gathered(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Head outputs at one candidate per position, never touching the other V-1.

        Args:
            hidden: ``(..., d)`` trunk states.
            tokens: ``(...)`` candidate ids (e.g. the realised next tokens); must be in ``[0, V)``.

        Returns:
            ``(..., n_out)`` raw outputs (logits, or mean and log variance).
        """
        q, c = self.features(hidden)
        E, b = self.keys_and_bias()
        keys = E[tokens]  # (..., r)
        return (q * keys.unsqueeze(-2)).sum(-1) + b[tokens] + c

    def all_candidates(self, hidden: torch.Tensor) -> torch.Tensor:
        """Head outputs for every candidate: ``hidden (..., d)`` -> ``(..., V, n_out)`` (inference only).

        Computed as one ``(..., n_out, r) @ (r, V)`` matmul into a contiguous ``(..., n_out, V)`` tensor and returned
        as a transposed *view* (no copy); :func:`to_distribution` works on that layout directly.
        """
        q, c = self.features(hidden)  # (..., n_out, r), (..., n_out)
        E, b = self.keys_and_bias()
        lead, (n, r) = q.shape[:-2], q.shape[-2:]
        if n == 1:  # binary: fold both biases into the GEMM, [q, c, 1] · [E_v, 1, b_v], one pass over (.., V)
            qa = torch.cat([q[..., 0, :], c, torch.ones_like(c)], -1).reshape(-1, r + 2)
            keys = torch.cat([E, torch.ones_like(b), b], -1)
            return (qa @ keys.t()).view(*lead, 1, -1).transpose(-1, -2)
        out = (q.reshape(-1, r) @ E.t()).view(*lead, n, -1)  # one GEMM -> (..., n_out, V)
        out = out.add_(b.t()).add_(c.unsqueeze(-1))
        return out.transpose(-1, -2)

    def at_candidates(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Head outputs at ``k`` candidates per position (e.g. the top-k of p), never touching the other V - k.

        Args:
            hidden: ``(..., d)`` trunk states.
            tokens: ``(..., k)`` candidate ids in ``[0, V)``.

        Returns:
            ``(..., k, n_out)`` raw outputs, equal to ``all_candidates(hidden)`` gathered at ``tokens``.
        """
        q, c = self.features(hidden)  # (..., n_out, r), (..., n_out)
        E, b = self.keys_and_bias()
        keys = E[tokens]  # (..., k, r)
        return keys @ q.transpose(-1, -2) + b[tokens] + c.unsqueeze(-2)  # (..., k, n_out)

    def class_probability(self, hidden: torch.Tensor, target: int, chunk: int = 32,
                          out: torch.Tensor | None = None) -> torch.Tensor:
        """``P(a = target | v)`` for every candidate ``v``: ``hidden (..., d)`` -> ``(..., V)`` (binary/categorical).

        Never builds the ``(..., V, K)`` class tensor. With the logit gaps ``g_j(v) = l_j(v) − l_target(v)``, each a
        folded ``(r + 2)``-wide GEMM as in the binary :meth:`all_candidates`, ``P = 1 / (1 + Σ_{j≠target}
        exp(g_j))``, the softmax's target entry (an ``inf`` gap gives 0, as the softmax does); a binary head takes
        ``sigmoid(−g)``. The gaps are taken in base 2 (``exp2``: the same values, twice as fast here). Positions go ``chunk`` at a time so each ``(chunk, V)`` gap block is exponentiated and
        summed while it is still in cache. ``out`` (``(..., V)``, contiguous, the head's dtype) receives the result
        instead of a fresh tensor, e.g. the token logits once their softmax is taken: on CPU a fresh ``(B, T, V)``
        allocation (page faults, first touch) costs about as much as the head's GEMM.
        """
        K = self.config.num_classes
        if self.config.kind == "numeric" or not 0 <= target < K:
            raise ValueError(f"class_probability needs a binary or categorical head and a target in [0, {K}), got "
                             f"kind={self.config.kind!r}, target={target}; numeric heads give (mean, variance)")
        q, c = self.features(hidden)  # (..., n_out, r), (..., n_out)
        E, bias = self.keys_and_bias()
        lead = q.shape[:-2]
        q, c = q.reshape(-1, *q.shape[-2:]), c.reshape(-1, c.shape[-1])  # (n, n_out, r), (n, n_out)
        if self.config.kind == "binary":  # one logit l = l_1 − l_0: the gap to the other class is ∓l
            sign = -1.0 if target == 1 else 1.0
            dq, dc, db = sign * q, sign * c, sign * bias  # (n, 1, r), (n, 1), (V, 1)
        else:
            others = [j for j in range(K) if j != target]
            dq = q[:, others] - q[:, target:target + 1]  # (n, K-1, r)
            dc = c[:, others] - c[:, target:target + 1]  # (n, K-1)
            db = bias[:, others] - bias[:, target:target + 1]  # (V, K-1)
        qa = torch.cat([dq, dc.unsqueeze(-1), torch.ones_like(dc).unsqueeze(-1)], -1)  # (n, J, r+2)
        if db.shape[1] > 1:  # gaps in base 2: exp2 is about twice as fast as exp on CPU (Sleef vs MKL VML)
            qa = qa * math.log2(math.e)
        ones = torch.ones_like(db[:, :1])
        keys = [torch.cat([E, ones, db[:, j:j + 1]], -1).t() for j in range(db.shape[1])]  # (r+2, V)
        n, V = qa.shape[0], db.shape[0]
        if out is None:
            out = torch.empty(n, V, dtype=qa.dtype, device=qa.device)
        elif out.shape != (*lead, V) or not out.is_contiguous() or out.dtype != qa.dtype:
            raise ValueError(f"out must be a contiguous {qa.dtype} tensor of shape {(*lead, V)}, got "
                             f"{out.dtype} {tuple(out.shape)}; pass e.g. the float32 logits of the same positions")
        else:
            out = out.view(n, V)
        gap = torch.empty(min(chunk, n), V, dtype=qa.dtype, device=qa.device) if len(keys) > 1 else None
        for s in range(0, n, chunk):
            o = out[s:s + chunk]
            if len(keys) == 1:  # binary (or K = 2): P = sigmoid(−gap)
                torch.mm(qa[s:s + chunk, 0].neg(), keys[0], out=o)
                o.sigmoid_()
                continue
            torch.mm(qa[s:s + chunk, 0], keys[0], out=o)
            o.exp2_()
            g = gap[: o.shape[0]]
            for j in range(1, len(keys)):
                torch.mm(qa[s:s + chunk, j], keys[j], out=g)
                o.add_(g.exp2_())
            o.add_(1.0).reciprocal_()
        return out.view(*lead, V)

def to_distribution(raw: torch.Tensor, kind: str) -> torch.Tensor:
    """Raw head outputs ``(..., n_out)`` -> class probabilities ``(..., K)``, or ``(mean, variance)`` if numeric.

    When ``raw`` is the transposed view :meth:`AttributeHead.all_candidates` returns, the work is done in its
    contiguous ``(..., n_out, V)`` layout and a transposed view is returned (same values, no strided softmax).
    """
    raw = raw.float()
    if kind == "binary":
        p1 = torch.sigmoid(raw[..., 0])
        return torch.stack([1 - p1, p1], dim=-2).transpose(-1, -2)  # (..., 2) as a view of (2, ...) rows
    if raw.dim() >= 2 and not raw.is_contiguous() and raw.transpose(-1, -2).is_contiguous():
        kv = raw.transpose(-1, -2)  # (..., n_out, V)
        if kind == "categorical":
            return kv.softmax(-2).transpose(-1, -2)
        return torch.cat([kv[..., 0:1, :], kv[..., 1:2, :].exp()], dim=-2).transpose(-1, -2)
    if kind == "categorical":
        return raw.softmax(-1)
    return torch.stack([raw[..., 0], raw[..., 1].exp()], dim=-1)
