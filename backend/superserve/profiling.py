"""Measure what the scheduler needs to know about SubNets: held-out accuracy and forward latency."""

from __future__ import annotations

import statistics
import time
from typing import Sequence

import torch


__all__ = ["accuracy", "latency_ms", "pareto_front"]


@torch.inference_mode()
def accuracy(net: torch.nn.Module, plan, images: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> float:
    net.actuate(plan)
    correct = 0
    for i in range(0, len(images), batch):
        correct += int((net(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum())
    return correct / len(images)


@torch.inference_mode()
def latency_ms(model: torch.nn.Module, example: torch.Tensor, repeats: int = 7, warmup: int = 2,
               plan=None) -> float:
    """Median wall time of one forward pass of ``model`` on ``example`` (actuating ``plan`` first, if given)."""
    if plan is not None:
        model.actuate(plan)
    for _ in range(warmup):
        model(example)
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        model(example)
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1e6


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points (cost, value) that no other point beats on both: lower cost and higher value.

    Returned in ascending cost (and so ascending value) order.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front
