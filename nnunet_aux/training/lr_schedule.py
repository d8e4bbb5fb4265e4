"""Learning-rate schedules that nnU-Net does not have."""

from __future__ import annotations

from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler


class TwoPhasePolyLRScheduler(PolyLRScheduler):
    """nnU-Net's poly learning rate, run once over the pre-training epochs and again over the rest."""

    def __init__(self, optimizer, initial_lr: float, max_steps: int, first_phase_steps: int,
                 exponent: float = 0.9):
        self.first_phase_steps = first_phase_steps  # before super().__init__, which takes a first step
        super().__init__(optimizer, initial_lr, max_steps, exponent)

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        n = self.first_phase_steps
        step, length = (current_step, n) if current_step < n else (current_step - n, self.max_steps - n)
        new_lr = self.initial_lr * (1 - step / length) ** self.exponent
        for group in self.optimizer.param_groups:
            group["lr"] = new_lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
