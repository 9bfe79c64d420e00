"""lowbit: benchmark low-bit LLMs."""

__version__ = "0.1.0"
