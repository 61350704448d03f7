"""Tokenizer tests."""
