"""Kernel-level representation, lowering from the graded IR, and the host runtime."""
