"""The base of every params.yaml section: strict (no coercion, no unknown key) and frozen."""
from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
