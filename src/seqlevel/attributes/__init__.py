"""CAT: an attribute head on any causal LM, the joined model, estimation / credit / counterfactuals, steering.

* :mod:`.head` — the factorised vocabulary-indexed head; :mod:`.model` — ``AttributeModel`` (save/load, PEFT);
* :mod:`.estimate` — ``candidates`` (all ``(p(v), P(a|v))`` after a prefix), ``trace`` (estimates and credits
  along a sequence), ``counterfactuals``; :mod:`.monte_carlo` — the rollout baseline;
* :mod:`.steering` — product, satisficing and backtracking rules for ``seqlevel.decoding.generate``'s hook;
* :mod:`.logits_processor` — the product and satisficing rules as ``transformers.LogitsProcessor``s
  (``model.generate``), several heads/targets combined with weights;
* :mod:`.explain` — the table and figure behind ``seqlevel explain``.
"""

from seqlevel.attributes.estimate import (
    AttributeTrace,
    Candidates,
    Counterfactual,
    candidates,
    counterfactuals,
    expected_attribute,
    trace,
)
from seqlevel.attributes.head import KINDS, AttributeHead, AttributeHeadConfig, to_distribution
from seqlevel.attributes.logits_processor import (
    AttributeTarget,
    ProductLogitsProcessor,
    SatisficingLogitsProcessor,
)
from seqlevel.attributes.model import AttributeModel, AttributeOutput
from seqlevel.attributes.monte_carlo import monte_carlo_estimate
from seqlevel.attributes.steering import BacktrackRule, ProductRule, SatisficingRule

__all__ = ["KINDS", "AttributeHead", "AttributeHeadConfig", "AttributeModel", "AttributeOutput", "to_distribution",
           "AttributeTrace", "Candidates", "Counterfactual", "candidates", "counterfactuals", "expected_attribute",
           "trace", "monte_carlo_estimate", "BacktrackRule", "ProductRule", "SatisficingRule", "AttributeTarget",
           "ProductLogitsProcessor", "SatisficingLogitsProcessor"]
