"""Which SubNets a build serves: the accuracy-latency Pareto front of the candidates it measured."""

from __future__ import annotations

from typing import Sequence

__all__ = ["pareto_front"]


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
