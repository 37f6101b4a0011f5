"""CAT: an attribute head on any causal LM, the joined model, estimation / credit / counterfactuals, steering."""

from seqlevel.attributes.head import KINDS, AttributeHead, AttributeHeadConfig, to_distribution
from seqlevel.attributes.model import AttributeModel, AttributeOutput

__all__ = ["KINDS", "AttributeHead", "AttributeHeadConfig", "AttributeModel", "AttributeOutput", "to_distribution"]
