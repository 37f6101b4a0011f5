"""The ``Task`` protocol: what a benchmark needs from a known-P world, in one shape for every task.

A sequence is a list of token ids of the task's own ``tokenizer``, in the form ``sample`` returns it: ``<bos>``
first, ``<eos>`` last. ``log_prob`` and ``score`` also accept a sequence without its leading ``<bos>`` (a model's
completion after the ``[<bos>]`` prompt).

Which tasks have an exact P (``exact_p``):

* ``markov``: yes, the bigram product (MixCE synthetic, :class:`seqlevel.tasks.markov.MarkovTask`);
* ``reviews``: yes, text and star jointly (:class:`seqlevel.tasks.reviews.ReviewsTask`);
* ``key-to-door``: yes, the uniform random behaviour policy's trajectory probability
  (:class:`seqlevel.tasks.key_to_door.KeyToDoorTask`);
* ``arithmetic``: no (a continuous entropy draw with length rejection); ``log_prob`` raises ``NotImplementedError``
  and ``score`` (exact-match correctness) is its exact quantity (:class:`seqlevel.tasks.arithmetic.ArithmeticTask`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@runtime_checkable
class Task(Protocol):
    """A benchmark world: its tokenizer, its sampler, and its exact P and per-sequence score where it has them.

    Attributes:
        name: the registry name (``seqlevel.tasks.TASKS``), e.g. ``"markov"``.
        tokenizer: a Hugging Face tokenizer for the task's token ids, built locally (nothing is downloaded); every
            id ``sample`` returns is below ``len(tokenizer)``.
        exact_p: whether ``log_prob`` is the exact ``log P`` of the data distribution (False: it raises).
    """

    name: str
    tokenizer: PreTrainedTokenizerBase
    exact_p: bool

    def sample(self, n: int, seed: int = 0) -> list[list[int]]:
        """``n`` sequences (token ids, ``<bos>`` … ``<eos>``) drawn from the data distribution; the same ``seed``
        always gives the same list."""
        ...

    def log_prob(self, ids: Sequence[int]) -> float:
        """The exact ``log P(ids)`` of one whole sequence under the data distribution (``-inf`` outside its support).

        Raises:
            NotImplementedError: where the task has no tractable P (``exact_p`` is False: arithmetic).
        """
        ...

    def score(self, ids: Sequence[int]) -> dict[str, float]:
        """The task's exact per-sequence score, e.g. markov: impossible transitions and validity; arithmetic:
        exact-match correctness; key-to-door: win; reviews: the exact star posterior and its most likely star."""
        ...
