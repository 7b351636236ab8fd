"""Compression branch (docs/methods/token.md): training a DeiT-style distillation-token student
from a CNN teacher. ``l2l`` holds the learning-to-learn step of the FT layers (the patent's "first training").
"""
