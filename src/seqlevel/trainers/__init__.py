"""Thin Config + Trainer pairs over ``transformers.Trainer`` (one file per method)."""

from seqlevel.data import CausalLMCollator, tokenize_dataset
from seqlevel.trainers.attribute import AttributeConfig, AttributeTrainer
from seqlevel.trainers.callbacks import CreditMapCallback, RolloutTableCallback
from seqlevel.trainers.mixce import MixCEConfig, MixCETrainer
from seqlevel.trainers.replay import ReplayBuffer, Rollout
from seqlevel.trainers.sequencematch import SequenceMatchConfig, SequenceMatchTrainer

__all__ = ["MixCEConfig", "MixCETrainer", "CausalLMCollator", "tokenize_dataset", "AttributeConfig", "AttributeTrainer",
           "SequenceMatchConfig", "SequenceMatchTrainer", "ReplayBuffer", "Rollout", "RolloutTableCallback",
           "CreditMapCallback"]
