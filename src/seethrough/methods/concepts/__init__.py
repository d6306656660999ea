"""The concepts family."""
