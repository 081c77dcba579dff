"""Measure what the scheduler needs to know about SubNets: held-out accuracy and forward latency."""

from __future__ import annotations

import statistics
import time
from typing import Sequence

import torch


__all__ = ["accuracy", "latency_ms", "latency_curve_ms"]


@torch.inference_mode()
def accuracy(net: torch.nn.Module, plan, images: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> float:
    """Top-1 accuracy of ``plan`` on ``images`` (on the CPU), run where the SuperNet's weights are."""
    device = next(net.parameters()).device
    net.actuate(plan)
    correct = 0
    for i in range(0, len(images), batch):
        predicted = net(images[i:i + batch].to(device)).argmax(1).cpu()
        correct += int((predicted == labels[i:i + batch]).sum())
    return correct / len(images)


@torch.inference_mode()
def latency_ms(model: torch.nn.Module, example: torch.Tensor, repeats: int = 7, warmup: int = 2,
               plan=None) -> float:
    """Median time of one forward pass of ``model`` on ``example`` (actuating ``plan`` first, if given)."""
    return latency_curve_ms(model, [example], repeats, warmup, plan)[0]


@torch.inference_mode()
def latency_curve_ms(model: torch.nn.Module, examples: Sequence[torch.Tensor], repeats: int = 7, warmup: int = 2,
                     plan=None) -> list[float]:
    """Median time of one forward pass on each of ``examples`` (a batch size each), where the model's weights
    are: wall time on the CPU; on a GPU, CUDA events around each pass, the device synchronised before and after
    (the inputs are copied there first, untimed).

    Every repeat runs each example once, in turn: a slow spell of a shared machine then slows every batch size
    alike. Timed one batch size after another, a spell of a few seconds made batch 9 look slower than batch 16
    and batch 2 than batch 3, and the policies, which bisect latency by batch size, read that as the truth."""
    if plan is not None:
        model.actuate(plan)
    device = next(model.parameters()).device
    examples = [example.to(device) for example in examples]
    for _ in range(warmup):
        for example in examples:
            model(example)
    times = [[] for _ in examples]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    for _ in range(repeats):
        for example, measured in zip(examples, times):
            measured.append(_one_pass_ns(model, example, device))
    return [statistics.median(measured) / 1e6 for measured in times]


def _one_pass_ns(model: torch.nn.Module, example: torch.Tensor, device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        model(example)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e6  # ms -> ns
    start_ns = time.perf_counter_ns()
    model(example)
    return time.perf_counter_ns() - start_ns
