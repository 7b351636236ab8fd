"""bench_repro's reading of make's output: each stage from its 'Running stage' line to the next, the last to the end."""
from pipeline.tools.bench_repro import stage_seconds


def test_each_stage_runs_from_its_line_to_the_next_and_the_last_to_the_end():
    stamped = [(0.5, "python -m pipeline.tools.check"), (2.0, "Running stage 'check':"),
               (2.1, "> python -m pipeline.stages.check"), (5.0, "Running stage 'prepare':"),
               (30.25, "Running stage 'pretrain':"), (31.0, "pretrain E0: 100%"),
               (230.0, "pretrain E0:  99%|#| 1349/1350\rpretrain E0: 100%|#| 1350/1350\rRunning stage 'zero_shot':")]
    # the last: a progress bar's carriage returns and then DVC's line, with no newline between them
    assert stage_seconds(stamped, end=240.0) == {"check": 3.0, "prepare": 25.25, "pretrain": 199.75, "zero_shot": 10.0}


def test_no_stage_line_gives_no_stage():
    assert stage_seconds([(1.0, "Stage 'check' didn't change, skipping")], end=3.0) == {}
