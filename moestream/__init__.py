"""moestream: run Mixture-of-Experts LLMs bigger than RAM by streaming experts from the GGUF file."""

__version__ = "0.1.0"
