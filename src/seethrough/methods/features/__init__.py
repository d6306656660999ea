"""The features family."""
