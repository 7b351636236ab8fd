"""WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022, Eq. 1) per task.

Fine-tune on the task with L_ce alone, then interpolate the weights with the model the task started from:
``theta_m = (1 - alpha) * theta_{m-1} + alpha * theta_ft`` with alpha = `loss.wise_alpha`. The paper
interpolates with the zero-shot model; in continual learning the model the task starts from, E_{m-1}, plays
that part (as ZSCL's WiSE-FT baseline does), so every earlier task's weights keep a share.
"""
from __future__ import annotations

from pipeline.continual.finetune import Finetune
from pipeline.continual.registry import register_method
from pipeline.continual.weights import assign, floating_state, interpolate


@register_method
class WiseFT(Finetune):
    name = "wise_ft"

    def __init__(self, ctx):
        super().__init__(ctx)
        # The student starts as E_{m-1}: a copy now is theta_{m-1}, with no second read of its checkpoint.
        self.theta_prev = floating_state(ctx.student.model)

    def finish(self):
        model = self.ctx.student.model
        assign(model, interpolate(self.theta_prev, floating_state(model), self.ctx.params.loss.wise_alpha))
