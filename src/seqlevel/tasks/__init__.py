"""Known-P benchmark worlds: each task knows its true distribution P, so objectives can be scored exactly.

``arithmetic``: add-or-subtract-in-base questions (SequenceMatch §6.1), with ground-truth noise for ``<bksp>``.
``key_to_door``: the three-room sparse-reward grid world (DT Table 6, CAT §3.1); ``reviews``: a review
language with an exact 1-5 star posterior (CAT estimation and steering).
``markov``: the bigram world of the MixCE synthetic experiment (``markov_train`` holds its model and loop).
``markov_backspace``: that world with ground-truth noise for ``<bksp>`` and final-text metrics (SequenceMatch).
``tabular``: tree MDPs with exact occupancies, the instrument that judges the SequenceMatch objective's optimum.

Tasks with one shape: :class:`seqlevel.tasks.base.Task` names what a benchmark needs from a world: ``name``, its
``tokenizer``, ``sample(n, seed)``, the exact ``log_prob(ids)`` where the task has one (``exact_p``) and the exact
per-sequence ``score(ids)``. :data:`TASKS` maps each registry name to the class implementing it, and
:func:`get_task` builds one. Adding a task: one file implementing ``Task`` plus one registry line in :data:`TASKS`.
"""

import importlib

from seqlevel.tasks import arithmetic, key_to_door, reviews
from seqlevel.tasks.base import Task
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

# registry name -> "module:ClassName" of its Task implementation (imported only when asked for)
TASKS: dict[str, str] = {
    "markov": "seqlevel.tasks.markov:MarkovTask",
    "arithmetic": "seqlevel.tasks.arithmetic:ArithmeticTask",
    "key-to-door": "seqlevel.tasks.key_to_door:KeyToDoorTask",
    "reviews": "seqlevel.tasks.reviews:ReviewsTask",
}


def get_task(name: str, **kwargs) -> Task:
    """Build the registered task ``name`` (``_`` and ``-`` are interchangeable) with its constructor's ``kwargs``.

    Example:
        >>> get_task("markov", vocab_size=11, seed=1).name
        'markov'
    """
    key = name.strip().lower().replace("_", "-")
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}, or register a new one in "
                         "seqlevel.tasks.TASKS as 'name': 'module:ClassName'")
    module, _, cls = TASKS[key].partition(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)


__all__ = ["MarkovP", "Sequences", "make_p", "make_world", "sample", "sequence_log_prob", "avg_js", "avg_zero_mass", "arithmetic",
           "key_to_door", "reviews", "Task", "TASKS", "get_task"]
