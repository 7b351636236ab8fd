"""What every stage's main() shares: params loading and turning input errors into one clear line."""
from __future__ import annotations

import contextlib
import functools
import os
import sys

from pipeline import io
from pipeline.params import Params, RuntimeParams
from pipeline.errors import InputError


def stage(fn):
    """Wrap a stage's main(argv): an input error (params, files, images, checkpoints: `InputError`) prints
    one line naming the key, file or value and exits 2 (PIPELINE_DEBUG=1 shows the traceback first); Ctrl-C prints
    one line and exits 130; anything else is a bug and shows its traceback. Outputs are written atomically,
    so none is half-written; under DVC, which deleted the stage's outputs before running it, the line also
    says how to get the last committed ones back."""

    @functools.wraps(fn)
    def main(argv: list[str] | None = None):
        argv = sys.argv[1:] if argv is None else argv
        _exit_with_parent()
        try:
            return fn(argv)
        except InputError as e:
            if os.environ.get("PIPELINE_DEBUG"):  # the traceback too, and still an input error's exit code
                import traceback

                traceback.print_exc()
            print(f"\nerror: {e}{_restore_hint()}" if _inside_progress_bar() else f"error: {e}{_restore_hint()}",
                  file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print(f"\ninterrupted{_restore_hint()}", file=sys.stderr)
            raise SystemExit(130) from None
        except Exception:
            if os.environ.get("DVC_STAGE"):  # the traceback first, then where the outputs went
                import traceback

                traceback.print_exc()
                print(f"error: stage failed{_restore_hint()}", file=sys.stderr)
                raise SystemExit(1) from None
            raise

    return main


def _restore_hint() -> str:
    """Under `dvc repro` / `dvc exp run` (DVC sets DVC_STAGE): DVC removed this stage's outputs before running
    it, and the cache holds the last ones recorded in dvc.lock (metrics and plots are kept in git)."""
    name = os.environ.get("DVC_STAGE")
    if not name or name == "check":  # check's one output persists (dvc.yaml): DVC removed nothing
        return ""
    return f" [DVC removed {name}'s outputs before it ran: `git checkout -- metrics && dvc checkout` restores the last committed ones]"


def _exit_with_parent() -> None:
    """Linux: end this process when its parent dies. A `dvc repro` killed with SIGKILL cannot stop the stage
    it started, which would go on training outside DVC's lock and write outputs DVC no longer tracks."""
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):  # no prctl in this libc: nothing to do
        pass


def _inside_progress_bar() -> bool:
    """Whether a tqdm bar is open: the error line must start on a line of its own."""
    from tqdm import tqdm

    return bool(getattr(tqdm, "_instances", None))


def load_params(*libraries: str) -> Params:
    """params.yaml, validated, with the names of `libraries` (open_clip, timm) the stage imports anyway:
    importing a library only to check a name would cost seconds of every stage's start-up."""
    return Params.load(os.environ.get("PIPELINE_PARAMS", "params.yaml"), libraries=libraries)


def setup_runtime(runtime_params: RuntimeParams, seed: int):
    """A stage's process-wide settings from params.yaml's `runtime` section, as plain values: seeds, threads,
    device and precision (pipeline/runtime.py), then the image loaders' worker count and whether batches are
    pinned, which is on CUDA (pipeline/data/loader.py). Returns the device. The imports wait for the call:
    `python -m pipeline.tools.check` loads params through this module and needs neither."""
    from pipeline import runtime
    from pipeline.data import loader

    device = runtime.setup(seed, device=runtime_params.device, threads=runtime_params.threads,
                           precision=runtime_params.precision)
    loader.configure(runtime_params.workers, pin_memory=device.type == "cuda")
    return device


@contextlib.contextmanager
def live(directory):
    """DVCLive logger that leaves dvc.yaml alone (the stage declares its plots) and makes no experiment.

    DVCLive empties its folder when it starts; it logs into io.atomic_dir's staging folder instead, which
    replaces `directory` only when the block succeeds, so a failed or killed stage keeps the previous curves."""
    from dvclive import Live

    with io.atomic_dir(directory) as staging:
        with Live(dir=str(staging), dvcyaml=None, save_dvc_exp=False, report=None) as logger:
            yield logger
