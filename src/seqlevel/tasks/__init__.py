"""Known-P benchmark worlds: each task knows its true distribution P, so objectives can be scored exactly.

``arithmetic``: add-or-subtract-in-base questions (SequenceMatch §6.1), with ground-truth noise for ``<bksp>``.
``key_to_door``: the three-room sparse-reward grid world (DT Table 6, CAT §3.1); ``reviews``: a review
language with an exact 1-5 star posterior (CAT estimation and steering).
``markov``: the bigram world of the MixCE synthetic experiment (``markov_train`` holds its model and loop).
``markov_backspace``: that world with ground-truth noise for ``<bksp>`` and final-text metrics (SequenceMatch).
``tabular``: tree MDPs with exact occupancies, the instrument that judges the SequenceMatch objective's optimum.
"""

from seqlevel.tasks import arithmetic, key_to_door, reviews
from seqlevel.tasks.markov import (
    MarkovP,
    Sequences,
    avg_js,
    avg_zero_mass,
    make_p,
    make_world,
    sample,
    sequence_log_prob,
)

__all__ = ["MarkovP", "Sequences", "make_p", "make_world", "sample", "sequence_log_prob", "avg_js", "avg_zero_mass", "arithmetic",
           "key_to_door", "reviews"]
