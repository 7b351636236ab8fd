"""Stage `check`, the first of the pipeline: params.yaml whole (a DVC dependency as a file, so any change to it
reruns this stage) and the data it names, validated (pipeline/validation.py). DVC removes a stage's outputs
just before running it, so a bad value stopped here, with its one line, costs no other stage its outputs:
`dvc repro` and `dvc exp run -S` alike stop at this stage.

Its one output is a stamp with constant content that prepare and target depend on: a params change reruns
this stage (a few seconds), and then exactly the stages that read what changed, as before."""
from __future__ import annotations

from pipeline import io, paths
from pipeline.params import LIBRARIES
from pipeline.stages.common import load_params, stage
from pipeline.validation import check_all

STAMP = "params.yaml and the data it names passed pipeline.check\n"  # constant: its hash never changes


@stage
def main(argv):
    if argv:
        raise SystemExit("usage: python -m pipeline.stages.check  (reads params.yaml, or $PIPELINE_PARAMS)")
    print(check_all(load_params(*LIBRARIES)))
    io.write_text(paths.CHECKED, STAMP)


if __name__ == "__main__":
    main()
