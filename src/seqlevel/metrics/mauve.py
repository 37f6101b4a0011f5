"""MAUVE through the ``mauve-text`` package, on features computed by any local Hugging Face model.

``mauve-text`` is GPLv3, so it is an optional extra (``pip install 'seqlevel[eval]'``) and never vendored.
Features follow the package's own recipe — the final-layer hidden state at the last real token — but are
computed here with any local model (our tiny models included), so nothing is downloaded. Human (p) features
are usually shared by every compared model: :class:`FeatureCache` computes them once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

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
        k = self.key(texts, f"{name}:{id(model)}")
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
    return lib.compute_mauve(p_features=p, q_features=q, **mauve_options)
