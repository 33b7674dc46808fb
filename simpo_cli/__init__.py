"""simpo-cli: a declarative command-line experiment runner for LLM preference optimisation."""

__version__ = "0.1.0"
