"""`python -m pipeline.check`: validate params.yaml before DVC runs anything (`make repro` calls it first).

Every key of every section (a stage validates only when DVC runs it, and DVC runs no stage for a key no
stage reads, such as a misspelt top-level one), the open_clip and timm names that stages check only where
they import those libraries, the task chain, and the data folders the params name. An error is one line
naming the key or folder, exit 2; nothing is written."""
from __future__ import annotations

from pipeline.config import LIBRARIES
from pipeline.stages.common import load_params, stage


@stage
def main(argv: list[str]) -> None:
    if argv:
        raise SystemExit("usage: python -m pipeline.check  (reads params.yaml, or $PIPELINE_PARAMS)")
    params = load_params(*LIBRARIES)
    print(f"params.yaml: ok ({params.data.benchmark} benchmark, tasks {' -> '.join(params.task_names)})")


if __name__ == "__main__":
    main()
