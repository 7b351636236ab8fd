"""`python -m pipeline.tools.check`: validate params.yaml and the data it names (pipeline/validation.py) without
running anything. The DVC stage `check` runs the same checks first in every `dvc repro` / `dvc exp run`, so a
bad value stops DVC before it removes any stage's outputs; this command gives the same line by hand (`make repro`
calls it too: DVC's own error for a params.yaml it cannot parse is not one line). Exit 2 on an error; nothing
is written."""
from __future__ import annotations

from pipeline.params import LIBRARIES
from pipeline.stages.common import load_params, stage
from pipeline.validation import check_all


@stage
def main(argv: list[str]) -> None:
    if argv:
        raise SystemExit("usage: python -m pipeline.tools.check  (reads params.yaml, or $PIPELINE_PARAMS)")
    print(check_all(load_params(*LIBRARIES)))


if __name__ == "__main__":
    main()
