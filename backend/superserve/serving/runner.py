"""Runs (SubNet, batch) on a SuperNet in place: the compute step of the serving core and of every worker process.

Actuating a SubNet is a pointer swap (SubNetAct); nothing is copied. On a GPU a batch goes in through one pinned
host buffer, copied asynchronously; on the CPU as it is.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

__all__ = ["SubnetRunner"]


class SubnetRunner:
    def __init__(self, net: torch.nn.Module, profile: Mapping[str, Any], device: torch.device) -> None:
        self.device = device
        self.net = net.to(device).eval()  # before any plan: pre-bound views live where the weights do
        self.max_batch = int(profile.get("max_batch_size") or len(profile["subnets"][0]["latency_ms"]))
        self.input_shape = tuple(int(d) for d in profile["input_shape"])
        self.plans = [net.servable_plan(net.space.parse(entry["config"])) for entry in profile["subnets"]]
        self._staging = (torch.empty((self.max_batch, *self.input_shape), pin_memory=True)
                         if device.type == "cuda" else None)

    @torch.inference_mode()
    def warm_up(self) -> None:
        """One pass per SubNet at batch 1 and the largest batch, so the first requests are not slow."""
        for plan in self.plans:
            self.net.actuate(plan)
            for batch in (1, self.max_batch):
                self.net(torch.zeros((batch, *self.input_shape), device=self.device))

    @torch.inference_mode()
    def run(self, subnet: int, images: np.ndarray) -> np.ndarray:
        """Logits of ``images`` on SubNet ``subnet`` (a new array)."""
        self.net.actuate(self.plans[subnet])
        return self.net(self._on_device(images)).cpu().numpy()

    def _on_device(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(images)
        if self._staging is None:
            return x
        staged = self._staging[:x.shape[0]]
        staged.copy_(x)  # the previous batch's copy is done: its logits came back (.cpu() waits)
        return staged.to(self.device, non_blocking=True)
