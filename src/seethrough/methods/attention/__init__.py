"""The attention family for vision transformers: rollout, LeGrad and the per-head view."""

from .legrad import AttentionHeads, LeGrad
from .rollout import AttentionRollout, attention_modules, rollout

__all__ = ["AttentionRollout", "LeGrad", "AttentionHeads", "attention_modules", "rollout"]
