"""What every stage's main() shares: params loading and turning input errors into one clear line."""
from __future__ import annotations

import functools
import os
import sys

from pipeline.config import Params, ParamsError


def stage(fn):
    """Wrap a stage's main(argv): params and input errors print one line naming the key or file and exit 2
    (set PIPELINE_DEBUG=1 for the traceback); nothing is written by then, outputs are written atomically."""

    @functools.wraps(fn)
    def main(argv: list[str] | None = None):
        argv = sys.argv[1:] if argv is None else argv
        try:
            return fn(argv)
        except (ParamsError, FileNotFoundError, ValueError) as e:
            if os.environ.get("PIPELINE_DEBUG"):
                raise
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None

    return main


def load_params(*libraries: str) -> Params:
    """params.yaml, validated, with the names of `libraries` (open_clip, timm) the stage imports anyway:
    importing a library only to check a name would cost seconds of every stage's start-up."""
    return Params.load(os.environ.get("PIPELINE_PARAMS", "params.yaml"), libraries=libraries)


def live(directory):
    """DVCLive logger that leaves dvc.yaml alone (the stage declares its plots) and makes no experiment."""
    from dvclive import Live

    return Live(dir=str(directory), dvcyaml=None, save_dvc_exp=False, report=None)
