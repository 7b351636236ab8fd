"""Stage `pretrain`: E0, trained contrastively on the caption corpus or loaded. It reads the corpus, the model
and the pretrain params only, so a new task chain restores it from DVC's cache; its zero-shot accuracy on the
tasks is the stage `zero_shot`'s."""
from __future__ import annotations

import time

from pipeline import io, paths
from pipeline.params import E0
from pipeline.data import load_corpus
from pipeline.models import clip as clip_lib
from pipeline.pretraining import pretrain
from pipeline.stages.common import live, load_params, setup_runtime, stage

# read by this stage, as in dvc.yaml (runtime but nproc: train@*'s alone)
PARAMS = ["model", "pretrain", "runtime.device", "runtime.threads", "runtime.precision"]


@stage
def main(argv):
    params = load_params("open_clip")
    device = setup_runtime(params.runtime, params.pretrain.seed)
    start = time.perf_counter()
    if params.model.pretrained is None:
        corpus = load_corpus(paths.CORPUS, needed_by="model.pretrained: null")
        clip = clip_lib.build(params.model.arch, params.data.image_size)
        with live(paths.PRETRAIN_LIVE) as logger:
            pretrain(clip, corpus, params.pretrain, device, logger, precision=params.runtime.precision)
    else:
        clip = clip_lib.build(params.model.arch, params.data.image_size, params.model.pretrained)
    # No wall time in the checkpoint's JSON: it would change the output's hash on every run, and DVC would
    # then re-run every downstream stage although the weights are byte-identical.
    seconds = time.perf_counter() - start
    meta = {"name": E0, "source": params.model.pretrained or "pretrain stage"}
    with io.atomic_dir(paths.model_dir(E0)) as folder:
        clip_lib.save(clip, folder, meta | {"params": params.select(PARAMS)})
    print(f"E0 ({seconds:.0f}s) written to {paths.model_dir(E0)}")


if __name__ == "__main__":
    main()
