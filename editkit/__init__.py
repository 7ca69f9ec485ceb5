"""editkit: find where a language model stores a fact, and change it."""

__version__ = "0.1.0"
