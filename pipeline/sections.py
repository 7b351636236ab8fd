"""The base of every params.yaml section: strict (no coercion, no unknown key), frozen, and every float finite
(`train.lr: .inf` would train to NaN weights)."""
from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
