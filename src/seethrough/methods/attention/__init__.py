"""The attention family: attention rollout for vision transformers."""

from .rollout import AttentionRollout, attention_modules, rollout

__all__ = ["AttentionRollout", "attention_modules", "rollout"]
