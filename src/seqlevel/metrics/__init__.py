"""Evaluation metrics: MAUVE, text statistics, perplexity, coherence, and oracle (true-P) metrics."""

from seqlevel.metrics.lm import coherence, perplexity, right_pad
from seqlevel.metrics.mauve import FeatureCache, MauveResult, featurize, mauve, mauve_with_error_bars
from seqlevel.metrics.oracle import true_nll
from seqlevel.metrics.text import (
    backspace_usage,
    distinct_ngram_diversity,
    length_stats,
    ngram_entropy,
    rep_n,
    simctg_diversity,
)

__all__ = [
    "mauve", "mauve_with_error_bars", "MauveResult", "featurize", "FeatureCache", "perplexity", "coherence", "right_pad", "true_nll", "distinct_ngram_diversity",
    "simctg_diversity", "rep_n", "ngram_entropy", "length_stats", "backspace_usage",
]
