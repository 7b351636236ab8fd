"""Name -> continual-learning method class. A leaf module (no torch, no config): params validation checks a
method's name here without importing any method, and `get_method` imports the method's module on demand."""
from __future__ import annotations

from pipeline.registry import MethodRegistry

# Every method params.yaml may name -> its module under pipeline/continual (which registers the class).
MODULES: dict[str, str] = {
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

_REGISTRY = MethodRegistry("pipeline.continual", MODULES)
METHODS = _REGISTRY.methods
register_method = _REGISTRY.register
check_method_name = _REGISTRY.check
get_method = _REGISTRY.get
all_methods = _REGISTRY.all
