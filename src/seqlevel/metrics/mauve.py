"""MAUVE through the ``mauve-text`` package, on features computed by any local Hugging Face model.

``mauve-text`` is GPLv3, so it is an optional extra (``pip install 'seqlevel[eval]'``) and never vendored.
Features follow the package's own recipe — the final-layer hidden state at the last real token — but are
computed here with any local model (our tiny models included), so nothing is downloaded. Human (p) features
are usually shared by every compared model: :class:`FeatureCache` computes them once.

:func:`mauve_with_error_bars` is what ``seqlevel evaluate`` reports, for three known weaknesses of a single score:
the k-means clustering's seed moves MAUVE by as much as the gaps papers report (so it runs several seeds and gives
mean ± std); texts of different lengths give meaningless scores (so both sides are truncated to the same number
of featurizer tokens, recorded, and a remaining length gap or too few samples is flagged instead of hidden); and a
score is comparable only under one featurizer (so its name and feature dimension travel with the score).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch


def _require_mauve():
    try:
        import mauve  # noqa: F401  (GPLv3; optional extra)
    except ImportError as err:
        raise ImportError("MAUVE needs the optional 'mauve-text' package: pip install 'seqlevel[eval]' "
                          "(it brings mauve-text, faiss-cpu and scikit-learn)") from err
    return mauve


@torch.no_grad()
def featurize(texts: Sequence[str], model, tokenizer, *, batch_size: int = 16, max_length: int = 512,
              device: str | torch.device | None = None) -> np.ndarray:
    """Final-layer hidden state at the last real token of each text, as ``(n, d)`` float32.

    Args:
        texts: strings to featurize.
        model: any local transformers model returning ``hidden_states`` (causal LM or encoder).
        tokenizer: its tokenizer (right padding is used internally).
        batch_size: texts per forward pass.
        max_length: texts are truncated to this many tokens.
        device: where to run; defaults to the model's device.
    """
    if len(texts) == 0:
        raise ValueError("no texts to featurize; pass at least one string")
    device = device or next(model.parameters()).device
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    feats = []
    try:
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[i : i + batch_size]), return_tensors="pt", padding=True, truncation=True,
                            max_length=max_length).to(device)
            if enc["input_ids"].shape[1] == 0:
                raise ValueError("texts tokenized to zero tokens; MAUVE needs non-empty texts")
            out = model(**enc, output_hidden_states=True)
            h = out.hidden_states[-1]  # (B, T, d)
            last = enc["attention_mask"].sum(1).clamp_min(1) - 1  # (B,) index of the last real token
            feats.append(h[torch.arange(h.shape[0], device=h.device), last].float().cpu())
    finally:
        tokenizer.padding_side = old_side
    return torch.cat(feats).numpy()


class FeatureCache:
    """In-memory cache of features keyed by (featurizer name, texts), so p features are computed once."""

    def __init__(self) -> None:
        self._store: dict[str, np.ndarray] = {}

    @staticmethod
    def key(texts: Sequence[str], featurizer_name: str) -> str:
        h = hashlib.sha256(featurizer_name.encode())
        for t in texts:
            h.update(b"\x00" + t.encode("utf-8"))
        return h.hexdigest()

    def get(self, texts: Sequence[str], model, tokenizer, **kw) -> np.ndarray:
        name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        k = self.key(texts, f"{name}:{id(model)}:{sorted(kw.items())}")  # max_length changes the features
        if k not in self._store:
            self._store[k] = featurize(texts, model, tokenizer, **kw)
        return self._store[k]

    def __len__(self) -> int:
        return len(self._store)


def mauve(p_features: np.ndarray | None = None, q_features: np.ndarray | None = None, *,
          p_texts: Sequence[str] | None = None, q_texts: Sequence[str] | None = None,
          featurizer=None, featurizer_tokenizer=None, cache: FeatureCache | None = None,
          max_length: int = 512, **mauve_options):
    """MAUVE between human (p) and model (q) text distributions.

    Give each side as features ``(n, d)`` or as texts plus ``featurizer``/``featurizer_tokenizer`` (a local
    model; ``cache`` reuses p features across calls). Remaining keyword arguments go to
    ``mauve.compute_mauve`` (e.g. ``num_buckets``, ``kmeans_num_redo``, ``kmeans_max_iter``, ``seed``).

    Returns:
        The ``mauve-text`` result object: ``.mauve`` (float in (0, 1], higher = closer), ``.frontier_integral``,
        ``.mauve_star``, histograms and the divergence curve.
    """
    lib = _require_mauve()

    def side(name, feats, texts):
        if feats is not None and texts is not None:
            raise ValueError(f"give {name}_features or {name}_texts, not both")
        if feats is not None:
            arr = np.asarray(feats, dtype=np.float32)
            if arr.ndim != 2 or arr.shape[0] < 2:
                raise ValueError(f"{name}_features must have shape (n >= 2, d), got {arr.shape}")
            return arr
        if texts is None:
            raise ValueError(f"{name} side missing: pass {name}_features=(n, d) array or {name}_texts=[...]")
        if featurizer is None or featurizer_tokenizer is None:
            raise ValueError(f"{name}_texts needs featurizer= and featurizer_tokenizer= (any local HF model)")
        get = cache.get if cache is not None else (lambda t, m, tk, **k: featurize(t, m, tk, **k))
        return get(list(texts), featurizer, featurizer_tokenizer, max_length=max_length)

    p = side("p", p_features, p_texts)
    q = side("q", q_features, q_texts)
    if p.shape[1] != q.shape[1]:
        raise ValueError(f"p and q features differ in width ({p.shape[1]} vs {q.shape[1]}); use one featurizer")
    mauve_options.setdefault("verbose", False)
    with _quiet_stderr():  # faiss prints "WARNING clustering 16 points to 2 centroids" per k-means run, in C
        return lib.compute_mauve(p_features=p, q_features=q, **mauve_options)


@contextlib.contextmanager
def _quiet_stderr():
    """Send file descriptor 2 to /dev/null inside the block (faiss writes its warnings there with fprintf, so
    ``warnings`` and ``sys.stderr`` cannot catch them; ``sys.stderr`` may not even be descriptor 2)."""
    import os
    import sys

    fd = 2
    sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no descriptor 2 (a daemon): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


# Below these, a MAUVE number is flagged as not meaningful (``MauveResult.warning``) rather than reported.
MIN_SAMPLES = 50  # per side; mauve-text's authors use 5,000, and small n biases MAUVE up and widens its spread
MIN_LENGTH_RATIO = 0.8  # shorter side's mean token count / longer side's, after truncation


@dataclass
class MauveResult:
    """MAUVE over several k-means seeds, with what a reader needs to compare it.

    Attributes:
        mean / std: over the seeds (``std`` is the sample standard deviation, ddof = 1; 0 for one seed).
        scores: one MAUVE per seed. seeds: the k-means seeds used.
        max_tokens: both sides were truncated to this many featurizer tokens (``None``: given as features).
        featurizer: name or path of the model that made the features. feature_dim: their width.
        num_p / num_q: samples per side (p = reference, q = model).
        mean_tokens_p / mean_tokens_q: mean featurizer tokens per text after truncation (``None`` for features).
        num_buckets: k-means clusters.
        meaningful: False when too few samples or unequal lengths make the number meaningless.
        warning: why not (``None`` when meaningful).
    """

    mean: float
    std: float
    scores: list[float]
    seeds: list[int]
    max_tokens: int | None
    featurizer: str
    feature_dim: int
    num_p: int
    num_q: int
    mean_tokens_p: float | None
    mean_tokens_q: float | None
    num_buckets: int
    meaningful: bool
    warning: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def _token_lengths(texts: Sequence[str], tokenizer) -> list[int]:
    return [len(x) for x in tokenizer(list(texts), truncation=False)["input_ids"]]


def _validity(n_p: int, n_q: int, len_p: float | None, len_q: float | None, max_tokens: int | None,
              min_samples: int) -> str | None:
    problems = []
    if min(n_p, n_q) < min_samples:
        problems.append(f"too few samples ({n_p} reference, {n_q} model; at least {min_samples} per side are needed, "
                        "the MAUVE authors use 5,000): the score is biased upward and varies widely")
    if len_p is not None and len_q is not None and min(len_p, len_q) < MIN_LENGTH_RATIO * max(len_p, len_q):
        problems.append(f"unequal lengths after truncation to {max_tokens} tokens (reference texts average "
                        f"{len_p:.1f} tokens, model texts {len_q:.1f}): the score would mostly measure length; "
                        "generate longer texts or lower the truncation length")
    return "; ".join(problems) or None


def mauve_with_error_bars(p_features: np.ndarray | None = None, q_features: np.ndarray | None = None, *,
                          p_texts: Sequence[str] | None = None, q_texts: Sequence[str] | None = None,
                          featurizer=None, featurizer_tokenizer=None, featurizer_name: str | None = None,
                          num_seeds: int = 5, seed: int = 0, max_tokens: int | None = None,
                          min_samples: int = MIN_SAMPLES, cache: FeatureCache | None = None,
                          **mauve_options) -> MauveResult:
    """MAUVE mean ± std over ``num_seeds`` k-means seeds, both sides truncated to the same token length.

    Give each side as features ``(n, d)`` or as texts plus ``featurizer``/``featurizer_tokenizer`` (as in
    :func:`mauve`). With texts, every text is cut to ``max_tokens`` featurizer tokens; the default is the smaller of
    the two sides' median lengths, so typical texts of both sides end at the same length. The features are computed
    once; only the clustering is repeated, with seeds ``seed, seed + 1, ...``.

    Args:
        p_features / q_features: ``(n, d)`` reference / model features.
        p_texts / q_texts: reference / model texts (instead of features).
        featurizer / featurizer_tokenizer: a local Hugging Face model and its tokenizer, for texts.
        featurizer_name: recorded with the score (default: the featurizer's ``name_or_path``, or ``"features"``).
        num_seeds: k-means seeds (>= 1; 5 by default). seed: the first seed.
        max_tokens: truncation length in featurizer tokens (texts only; default: see above).
        min_samples: below this many samples per side the result is flagged as not meaningful.
        cache: a :class:`FeatureCache` to reuse features across calls.
        **mauve_options: passed to ``mauve.compute_mauve`` (``num_buckets``, ``kmeans_num_redo``, ...).

    Returns:
        :class:`MauveResult` (``.to_dict()`` is what ``metrics.json`` holds under ``"mauve"``).
    """
    if num_seeds < 1:
        raise ValueError(f"num_seeds must be >= 1, got {num_seeds}; 5 seeds give a usable standard deviation")
    len_p = len_q = None
    if p_texts is not None or q_texts is not None:
        if p_texts is None or q_texts is None:
            raise ValueError("give both p_texts and q_texts (the same featurizer must see both sides), or both "
                             "sides as features")
        if featurizer is None or featurizer_tokenizer is None:
            raise ValueError("texts need featurizer= and featurizer_tokenizer= (any local HF model)")
        if len(p_texts) == 0 or len(q_texts) == 0:
            raise ValueError(f"got {len(p_texts)} reference and {len(q_texts)} model texts; both sides need texts")
        lp, lq = _token_lengths(p_texts, featurizer_tokenizer), _token_lengths(q_texts, featurizer_tokenizer)
        if max_tokens is None:
            max_tokens = max(1, int(min(np.median(lp), np.median(lq))))
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        len_p = float(np.mean(np.minimum(lp, max_tokens)))
        len_q = float(np.mean(np.minimum(lq, max_tokens)))
        get = cache.get if cache is not None else (lambda t, m, tk, **k: featurize(t, m, tk, **k))
        p_features = get(list(p_texts), featurizer, featurizer_tokenizer, max_length=max_tokens)
        q_features = get(list(q_texts), featurizer, featurizer_tokenizer, max_length=max_tokens)
        if featurizer_name is None:
            featurizer_name = getattr(getattr(featurizer, "config", None), "_name_or_path", "") or type(featurizer).__name__
    elif p_features is None or q_features is None:
        raise ValueError("pass p_features and q_features ((n, d) arrays), or p_texts and q_texts with a featurizer")
    seeds = list(range(seed, seed + num_seeds))
    results = [mauve(p_features, q_features, seed=s, **mauve_options) for s in seeds]
    # The divergence-curve area carries ~1e-16 of summation noise that depends on how clusters are numbered;
    # rounding it away makes identical sets score exactly alike under every seed (std exactly 0).
    scores = [round(float(r.mauve), 12) for r in results]
    n_p, n_q = int(np.asarray(p_features).shape[0]), int(np.asarray(q_features).shape[0])
    warning = _validity(n_p, n_q, len_p, len_q, max_tokens, min_samples)
    return MauveResult(
        mean=float(np.mean(scores)), std=float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
        scores=scores, seeds=seeds, max_tokens=max_tokens, featurizer=featurizer_name or "features",
        feature_dim=int(np.asarray(p_features).shape[1]), num_p=n_p, num_q=n_q, mean_tokens_p=len_p,
        mean_tokens_q=len_q, num_buckets=int(results[0].num_buckets), meaningful=warning is None, warning=warning)


def report_line(m: dict) -> str:
    """The ``report.md`` cell for a :meth:`MauveResult.to_dict`: ``mean ± std`` and what it depends on, or why
    there is no number."""
    setting = (f"{len(m['seeds'])} k-means seeds, {m['num_p']}/{m['num_q']} samples, truncated to "
               f"{m['max_tokens']} tokens, featurizer `{m['featurizer']}` (d = {m['feature_dim']})")
    if not m["meaningful"]:
        return f"not reported: {m['warning']} ({setting}; the numbers are in metrics.json)"
    return f"{m['mean']:.3f} ± {m['std']:.3f} ({setting})"
