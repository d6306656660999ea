"""Version of the seethrough package."""

__version__ = "0.1.0"
