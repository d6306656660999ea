"""The small core shared by every method: hooks, targets, layers and model state."""
