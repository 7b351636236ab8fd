"""params.yaml's `compare` section: the comparison commands' variants, seeds, settings and the selection
protocol's search. Read by pipeline/tools only, so no stage reruns when it changes.

Part of the typed-config core (pipeline/params imports it): no torch."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipeline.sections import Section


Scalar = bool | int | float | str


class CompareParams(Section):
    """`make compare`: every variant (dotted-key overrides of params.yaml) x every seed (`train.seed`).
    Read by pipeline/tools/compare.py only, so no stage reruns when it changes."""

    seeds: list[int] = [0, 1, 2]
    # `make compare` / `make compare-ablation`: the keys each seed sets. The default redraws the tasks' images
    # and E0's corpus (data.seed), E0 (pretrain.seed) and the batch order (train.seed); seed 0 is the default
    # pipeline's run. [train.seed] alone keeps one data draw and one E0 (the tables before they were redrawn).
    seed_keys: list[str] = ["data.seed", "pretrain.seed", "train.seed"]

    @field_validator("seed_keys")
    @classmethod
    def _seed_keys(cls, v: list[str]) -> list[str]:
        known = ("data.seed", "pretrain.seed", "train.seed")
        if not v or "train.seed" not in v or any(k not in known for k in v) or len(set(v)) != len(v):
            raise ValueError(f"must be distinct keys of {list(known)} with train.seed among them, got {v}")
        return v

    jobs: int | None = Field(None, ge=1)  # experiments at once; null: cores // runtime.threads
    # The selection protocol (pipeline/search.py, pipeline/selection.py): task orders by name (each a list of
    # every task of `tasks`, checked when a command uses it), the one hyperparameters are chosen on (with the
    # validation split `search_setting` carves) and the held-out one the reported tables run on.
    orders: dict[str, list[str]] = {}
    selection_order: str | None = None
    held_out_order: str | None = None
    search_setting: dict[str, Scalar] = {"data.val_per_class": 20}  # under every search run
    search_metric: Literal["transfer", "average", "last"] = "average"  # mean over seeds of this validation metric
    # per compare.variants entry: dotted key -> the values tried (their grid: every combination)
    search: dict[str, dict[str, list[Scalar]]] = {}
    # per compare.search entry: the method family's further ideas (issue 33, item 7), each key tried alone at the
    # grid's choice (`search --extend`) and chosen on validation like the grid, the grid's point winning a tie
    refine: dict[str, dict[str, list[Scalar]]] = {}
    variants: dict[str, dict[str, Scalar]] = {"finetune": {"train.method": "finetune"}, "dual_teacher": {}}
    ablation_variants: dict[str, dict[str, Scalar]] = {}  # `make compare-ablation`: variants of dual_teacher
    distill_variants: dict[str, dict[str, Scalar | None]] = {}  # `make compare-distill`; seeds set distill.seed
    # `make compare-distill`: overrides every distill variant starts from (its benchmark: target, teacher, budget)
    distill_setting: dict[str, Scalar | None] = {}
    token_variants: dict[str, dict[str, Scalar | None]] = {"soft": {}}  # `make compare-token`
    cohort_variants: dict[str, dict[str, Scalar | None]] = {}  # `make compare-cohort`; seeds set cohort.seed
    cohort_setting: dict[str, Scalar | None] = {}  # overrides every cohort variant starts from
    # `make room` (pipeline/room.py): the target and recipes the room probe runs, over each branch's setting; the
    # tables on that target take the same keys as `--set` (`python -m pipeline.tools.room --commands` prints them)
    room_setting: dict[str, Scalar | None] = {}
