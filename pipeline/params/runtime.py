"""params.yaml's `runtime` section: where and how every stage computes (device, threads, precision, processes).

Part of the typed-config core (pipeline/params imports it): no torch."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from pipeline.sections import Section


class RuntimeParams(Section):
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    threads: int = Field(2, ge=1)
    # DataLoader worker processes decoding images read from disk (pipeline/data/loader.py); 0: in the stage's
    # own process. Batches are the same whatever the count, so it is no DVC param of any stage (dvc.yaml).
    workers: int = Field(0, ge=0)
    # fp32: no autocast at all (the default; CPU outputs byte-identical to a run without this key) | bf16: bf16
    # autocast of forward passes and losses on CUDA, weights and optimiser state fp32 (pipeline/runtime.py)
    precision: Literal["fp32", "bf16"] = "fp32"
    # train@*: processes training each task (one GPU each, or gloo processes on the CPU), started by torchrun;
    # each takes an equal share of every batch (pipeline/distributed.py). 1: one process, no torchrun
    nproc: int = Field(1, ge=1)
    # train@* across several machines (docs/real-scale.md, "Several nodes"): `nodes` of `nproc` processes each,
    # this machine's `node_rank` (0: the one that runs DVC and writes the outputs) and node 0's `host:port`, where
    # torchrun's rendezvous meets. None of them changes an output beyond rounding, so none is a DVC param.
    nodes: int = Field(1, ge=1)
    node_rank: int = Field(0, ge=0)
    rdzv_endpoint: str | None = None

    @model_validator(mode="after")
    def _nodes(self) -> "RuntimeParams":
        if self.node_rank >= self.nodes:
            raise ValueError(f"runtime.node_rank: {self.node_rank} is not below runtime.nodes {self.nodes}")
        if self.nodes > 1:
            host, _, port = (self.rdzv_endpoint or "").rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"runtime.rdzv_endpoint: {self.rdzv_endpoint!r} with runtime.nodes {self.nodes} "
                                 f"must be node 0's host:port (e.g. node0.example.org:29500)")
        return self

    @field_validator("precision")
    @classmethod
    def _bf16_needs_cuda(cls, v: str, info: ValidationInfo) -> str:
        # `auto` is checked where it resolves (runtime.setup): only then is it known whether CUDA is there.
        if v == "bf16" and info.data.get("device") == "cpu":
            raise ValueError("bf16 needs a CUDA device, and runtime.device is 'cpu' (use fp32 on the CPU)")
        return v
