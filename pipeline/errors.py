"""Errors of input, apart from bugs: a leaf module every layer may raise from.

A stage (stages/common.py) prints an `InputError` as one line naming the key, file or value and exits 2;
any other exception is a bug and shows its traceback. Both subclass the built-in type a caller would
expect (ValueError, FileNotFoundError), so `except ValueError` still catches them."""
from __future__ import annotations


class InputError(ValueError):
    """Bad input: a params value, a file, an image, a checkpoint. The message names it."""


class MissingInput(InputError, FileNotFoundError):
    """A file or folder that the user or an earlier stage should have provided."""


class Diverged(InputError):
    """A loss term became NaN or infinite: training stops before anything is written. Usually a value of
    params.yaml (a learning rate, weight or temperature too large), so an input error: one line, exit 2."""
