"""The MixCE-faithful neural bigram model Q and its vectorised training loop on a :mod:`markov` world.

Model (official ``BigramLM``, notes §2.3): ``Embedding(V, 50) → Linear(50, 50) → ReLU → Dropout(0.1) →
Linear(50, V)`` applied to the previous token; Q's transition matrix is ``softmax(MLP(E.weight))``.

Recipe: Adam(lr 1e-3, weight decay 1e-4), batches of 1000 sequences (last partial batch dropped), up to 50
epochs, early stopping with patience 5 on the dev value of the *same* objective, metrics of the epoch with the
lowest dev loss. The official code loops over time steps in Python; here every scored position of a batch is
one row of a flat ``(N, V)`` logits matrix, with its own dropout mask as in the official per-position forward.
Only the Gumbel rollouts of the oracle objectives are sequential in time (batched over sequences).

Why this loop is not a ``transformers.Trainer`` (as ``seqlevel.trainers`` are): the model is a 50-wide MLP on one
previous token, so a step is a few small matrix products over all positions at once and a Markov run at the
paper's size takes well under a minute; the Trainer's per-step overhead (callbacks, logging, accelerate's
wrapping, a collator building padded batches) would dominate it, and the recipe's early stopping on the dev value
of the same objective and its metrics on the whole transition matrix are plain code here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from seqlevel.losses.oracle import gumbel_rollout, mixce_star_loss, reverse_kl_loss, two_kls_loss
from seqlevel.losses.token_weighted import mixce_loss, mle_loss, tailr_loss
from seqlevel.tasks.markov import MAX_LENGTH, MarkovP, Sequences, avg_js, avg_zero_mass
from seqlevel.tasks.markov_gumbel import bigram_gumbel_log_p

Tensor = torch.Tensor

# name -> (needs a parameter, parameter name, needs the true P)
OBJECTIVES: dict[str, tuple[bool, str | None, bool]] = {
    "mle": (False, None, False),
    "mixce": (True, "eta", False),  # official qlogq_mix, the MixCE approximation
    "tailr": (True, "gamma", False),
    "mixce_star": (True, "eta", True),  # official two_xens, MixCE* with the true P
    "reverse_kl": (False, None, True),
    "two_kls": (True, "eta", True),
}
TAILR_W_MIN = 0.2  # TaiLr's synthetic / long-text setting (thu-coai scripts): gamma=1e-7, w_min=0.2


@dataclass(frozen=True)
class Objective:
    """A training objective: ``name`` in :data:`OBJECTIVES` and its parameter (η for MixCE, γ for TaiLr)."""

    name: str
    param: float | None = None

    @property
    def eta(self) -> float | None:
        return self.param if OBJECTIVES[self.name][1] == "eta" else None

    @property
    def label(self) -> str:
        return self.name if self.param is None else f"{self.name}:{self.param:g}"


def parse_objective(spec: str) -> Objective:
    """Parse ``"mle"``, ``"mixce:0.9"``, ``"mixce_star:0.9"``, ``"tailr:1e-7"``, ``"two_kls:0.9"``."""
    name, _, value = spec.strip().partition(":")
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r} in {spec!r}; choose from {sorted(OBJECTIVES)}, "
                         "e.g. mle,mixce:0.9,mixce_star:0.9,tailr:1e-7")
    needs, pname, _ = OBJECTIVES[name]
    if not needs:
        if value:
            raise ValueError(f"objective {name!r} takes no parameter, got {spec!r}; write just {name!r}")
        return Objective(name)
    if not value:
        raise ValueError(f"objective {name!r} needs its {pname}, got {spec!r}; write e.g. {name}:0.9")
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"{pname} of {name!r} must be a number, got {value!r} in {spec!r}") from None
    if not (0.0 <= x <= 1.0):
        hint = "eta=1 is plain MLE" if pname == "eta" else "gamma=0 is MLE; TaiLr used 1e-7"
        raise ValueError(f"{pname} must be in [0, 1], got {x} in {spec!r}; {hint}")
    return Objective(name, x)


class BigramLM(nn.Module):
    """Q(x_t | x_{t−1}) = softmax(MLP(E[x_{t−1}])): the official synthetic model."""

    def __init__(self, vocab_size: int, hidden_size: int = 50, dropout: float = 0.1):
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_size, vocab_size)
        )

    def forward(self, prev: Tensor) -> Tensor:
        """``(N,)`` previous ids → ``(N, V)`` logits, with an independent dropout mask per position.

        Same function as ``self.mlp(self.embedding(prev))``, computed faster: everything before the dropout
        depends only on the previous token, so it runs on the ``V`` embedding rows and is then gathered.
        """
        lin1, _, drop, lin2 = self.mlp
        h = torch.relu(lin1(self.embedding.weight))[prev]  # (V, H) -> (N, H)
        if self.training and drop.p > 0:
            h = h * _dropout_mask(h.shape, drop.p)
        return lin2(h)  # (N, V)

    def logits_from_onehot(self, onehot: Tensor) -> Tensor:
        """``(b, V)`` one-hots → ``(b, V)`` logits through ``onehot @ E`` (differentiable: Gumbel path)."""
        return self.mlp(onehot @ self.embedding.weight)

    @torch.no_grad()
    def transition_matrix(self) -> np.ndarray:
        """Learned ``(V, V)`` matrix ``softmax(MLP(E))`` in eval mode (no dropout)."""
        was = self.training
        self.eval()
        m = torch.softmax(self.mlp(self.embedding.weight), dim=-1).double().cpu().numpy()
        self.train(was)
        return m


def _dropout_mask(shape: tuple[int, ...], p: float) -> Tensor:
    """Inverted-dropout mask ``keep / (1 − p)`` from 16 random bits per element (≈ 5× faster than
    ``bernoulli_`` on CPU; the drop probability is ``round(p·65536)/65536``, within 1e-5 of ``p``)."""
    n = int(np.prod(shape))
    # random_() fills int64 uniformly on [0, 2^63): its three low 16-bit chunks are uniform int16 values
    words = torch.empty((n + 2) // 3, dtype=torch.int64).random_()
    bits = words.view(torch.int16).view(-1, 4)[:, :3].reshape(-1)[:n]  # little-endian low chunks
    threshold = round(p * 65536) - 32768  # int16 is uniform on [-32768, 32767]
    keep = bits.view(shape) >= threshold
    return keep.to(torch.float32) * (65536 / (65536 - round(p * 65536)))


@dataclass
class TrainConfig:
    """The official recipe (notes §2.3); smaller values only for quick runs and tests."""

    max_epochs: int = 50
    batch_size: int = 1000
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5
    hidden_size: int = 50
    dropout: float = 0.1


@dataclass
class TrainResult:
    """What :func:`train_bigram` returns: the exact metrics at the best-dev epoch and the per-epoch history."""

    avg_js: float  # at the best-dev epoch
    avg_zero_mass: float
    best_epoch: int  # 1-based
    epochs: int  # epochs actually run
    seconds: float
    dev_losses: list[float] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # per epoch: dev_loss, avg_js, avg_zero_mass


def _log_p_table(p: MarkovP) -> Tensor:
    logT, logf = p.padded_log_matrices()  # (V, V), (V,)
    return torch.from_numpy(np.concatenate([logf[None], logT], axis=0)).float()  # (V + 1, V)


class _Batcher:
    """Flat bigram positions of batches of whole sequences, gathered without Python loops."""

    def __init__(self, seqs: Sequences):
        prev, nxt = seqs.bigram_pairs()
        self.prev, self.next = torch.from_numpy(prev), torch.from_numpy(nxt)
        self.log_p = torch.from_numpy(seqs.log_p)
        self.seqs = seqs

    def batch(self, idx: np.ndarray) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(prev, next, seq_of_position, log_p)`` for sequences ``idx``: ``(N,), (N,), (N,), (B,)``."""
        lens = self.seqs.lengths[idx]
        ends = np.cumsum(lens)
        flat = np.repeat(self.seqs.offsets[idx] - (ends - lens), lens) + np.arange(int(ends[-1]))
        flat_t = torch.from_numpy(flat)
        seq_of = torch.from_numpy(np.repeat(np.arange(len(idx)), lens))
        return self.prev[flat_t], self.next[flat_t], seq_of, self.log_p[torch.from_numpy(idx)]


def objective_loss(
    model: BigramLM, obj: Objective, prev: Tensor, nxt: Tensor, seq_of: Tensor, data_log_p: Tensor,
    log_p_table: Tensor | None, eos: int,
) -> Tensor:
    """The batch value of ``obj`` (sequence sums, batch means), as in the official ``synthetic.py``.

    Args:
        model: Q; its train/eval mode decides dropout.
        obj: the objective.
        prev, nxt: ``(N,)`` flattened scored positions of the batch (prev is BOS at t = 0).
        seq_of: ``(N,)`` sequence index of each position, in ``[0, B)``.
        data_log_p: ``(B,)`` exact log P of the data sequences (for the KL objectives).
        log_p_table: ``(V + 1, V)`` log P rows for the Gumbel path (objectives that need P).
        eos: EOS id.

    Returns:
        Scalar loss.
    """
    B = data_log_p.shape[0]
    name, param = obj.name, obj.param
    logits = None if name == "reverse_kl" else model(prev)  # (N, V)
    if name == "mle":
        return mle_loss(logits, nxt, reduction="sum") / B
    if name == "mixce":  # qlogq_mix: η·Σ −log q + (1−η)·Σ −sg(q) log q per sequence, batch mean (§1.4)
        return mixce_loss(logits, nxt, param, reduction="sum") / B
    if name == "tailr":
        return tailr_loss(logits, nxt, param, TAILR_W_MIN, reduction="sum") / B
    if log_p_table is None:
        raise ValueError(f"objective {obj.label!r} needs the true P (log_p_table)")
    data_log_q = None
    if logits is not None:
        tok = -mle_loss(logits, nxt, reduction="none")  # (N,) log q of each data token
        data_log_q = torch.zeros(B).index_add(0, seq_of, tok)  # (B,)
    empty = torch.zeros(0)
    if name == "mixce_star":  # the fast hand-written Gumbel path (same value and gradient, tested)
        sample_log_p = empty if param == 1.0 else bigram_gumbel_log_p(model, log_p_table, B, eos, MAX_LENGTH - 1)[0]
        return mixce_star_loss(data_log_q, sample_log_p, param)
    skip_reverse = param is not None and param == 1.0
    roll = None if skip_reverse else gumbel_rollout(model.logits_from_onehot, log_p_table, B, eos, MAX_LENGTH - 1)
    if name == "reverse_kl":
        return reverse_kl_loss(roll.log_q, roll.log_p)
    return two_kls_loss(data_log_q, data_log_p.float(), roll.log_q if roll else empty,
                        roll.log_p if roll else empty, param)


def _single_thread_blas():
    """numpy's BLAS on one thread: the Gumbel path's matmuls are tiny, and threads only add contention."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it, set OPENBLAS_NUM_THREADS=1 by hand
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def train_bigram(
    p: MarkovP,
    train: Sequences,
    dev: Sequences,
    obj: Objective,
    seed: int,
    config: TrainConfig | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Train Q on ``train`` with ``obj``; early-stop on the dev value of ``obj``; metrics at the best epoch.

    Args:
        p: the true distribution (for the metrics and the oracle objectives).
        train, dev: data sampled from ``p``.
        obj: the objective.
        seed: seeds the model initialisation, dropout, Gumbel noise and the shuffling.
        config: the recipe (default: the official one).
        on_epoch: called after each epoch with ``(epoch, {dev_loss, avg_js, avg_zero_mass})``.

    Returns:
        A :class:`TrainResult`.
    """
    with _single_thread_blas():
        return _train(p, train, dev, obj, seed, config or TrainConfig(), on_epoch)


def _train(p, train, dev, obj, seed, cfg, on_epoch) -> TrainResult:
    if len(train) < cfg.batch_size:
        raise ValueError(f"train size {len(train)} is smaller than one batch ({cfg.batch_size} sequences); "
                         "raise --train-size or lower the batch size")
    if cfg.max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1, got {cfg.max_epochs}")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    shuffle_rs = np.random.RandomState(seed + 1)
    model = BigramLM(p.vocab_size, cfg.hidden_size, cfg.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    table = _log_p_table(p) if OBJECTIVES[obj.name][2] else None
    tr, dv = _Batcher(train), _Batcher(dev)
    n_batches = len(train) // cfg.batch_size  # the last partial batch is dropped, as in the official loop
    best, patience, history = None, cfg.patience, []
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        order = shuffle_rs.permutation(len(train))
        for b in range(n_batches):
            prev, nxt, seq_of, lp = tr.batch(order[b * cfg.batch_size:(b + 1) * cfg.batch_size])
            loss = objective_loss(model, obj, prev, nxt, seq_of, lp, table, p.eos)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():  # dev: mean of per-batch values, the reverse terms by plain sampling from Q
            vals = [objective_loss(model, obj, *dv.batch(np.arange(s, min(s + cfg.batch_size, len(dev)))),
                                   table, p.eos).item() for s in range(0, len(dev), cfg.batch_size)]
        dev_loss = float(np.mean(vals))
        learned = model.transition_matrix()
        rec = {"dev_loss": dev_loss, "avg_js": avg_js(learned, p), "avg_zero_mass": avg_zero_mass(learned, p)}
        history.append(rec)
        if on_epoch is not None:
            on_epoch(epoch, rec)
        if best is None or dev_loss < best[1]["dev_loss"]:  # model selection on the dev objective
            best, patience = (epoch, rec), cfg.patience
        else:
            patience -= 1
            if patience <= 0:
                break
    return TrainResult(
        avg_js=best[1]["avg_js"], avg_zero_mass=best[1]["avg_zero_mass"], best_epoch=best[0],
        epochs=len(history), seconds=time.perf_counter() - t0,
        dev_losses=[h["dev_loss"] for h in history], history=history,
    )
