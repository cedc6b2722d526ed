"""Deterministic code only: the definition model, expressions, states and the interpreter workflow."""
