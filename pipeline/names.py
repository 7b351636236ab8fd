"""Every method name params.yaml may give, per branch, with the module that defines it, and the groups of
methods that params validation tells apart. A leaf module (no torch, no config, no method): the params schemas
(pipeline/params) check a name here, and the registries (continual/registry.py, compression/registry.py)
import a method's module by what it maps to here. A new method is one line here and its module."""
from __future__ import annotations

# train.method -> its module under pipeline/continual (which registers the class).
CONTINUAL_METHODS: dict[str, str] = {
    "dual_teacher": "dual_teacher",
    "finetune": "finetune",
    "lwf": "lwf",
    "lwm": "lwm",
    "wise_ft": "wise_ft",
    "zscl": "zscl",
}
# Methods that may read E0's caption corpus (data/corpus): ZSCL's reference batches with loss.zscl_reference:
# corpus_oracle. Params refuses that form on a folder benchmark that gives no corpus, and on mtil (which has none).
CORPUS_METHODS = frozenset({"zscl"})

# distill.method (and cohort.method for the online ones) -> its module under pipeline/compression.
DISTILL_METHODS: dict[str, str] = {
    "token": "token",
    "kd": "logit_kd",
    "fitnet": "fitnet",
    "channel_matching": "channel_matching",
    "dml": "dml",
    "mcl": "mcl",
    "lmcl": "lmcl",
}
# Methods that distil feature maps: they need a CNN teacher and a CNN student with distillation sites.
FEATURE_METHODS = frozenset({"fitnet", "channel_matching"})
# Online methods: a cohort trained together without a teacher (stage `cohort`, `cohort.method`), not `distill.method`.
ONLINE_METHODS = frozenset({"dml", "mcl", "lmcl"})
# Not a `distill.method`: training on the labels alone (the CNN teacher; a CNN student alone).
SUPERVISED = "supervised"


def check_name(name: str, known: dict[str, str] | frozenset[str], what: str = "method") -> str:
    """`name` if it is one of `known`, else a ValueError listing them (params validation words it as the key's)."""
    if name not in known:
        raise ValueError(f"unknown {what} {name!r}; known: {', '.join(sorted(known))}")
    return name
