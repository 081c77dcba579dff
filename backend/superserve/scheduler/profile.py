"""The offline profile the policies decide from: served SubNets, their accuracy and latency per batch size.

Parsed once from ``profile.json`` into frozen, validated objects. No torch, no Triton.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["SubnetProfile", "Profile", "ProfileError"]


class ProfileError(ValueError):
    """profile.json is malformed; the message says which field and what was expected."""


@dataclass(frozen=True)
class SubnetProfile:
    index: int
    id: str
    accuracy: float
    latency_ns: tuple[int, ...]  # latency_ns[b - 1]: one forward pass at batch size b, never below a smaller b's
    config: Mapping[str, Any] | None = None
    params: int = 0


@dataclass(frozen=True)
class Profile:
    """Served SubNets in ascending order of the accuracy they were chosen on; SubNet ``i`` is the index clients see
    in ``SUBNET``, and ``accuracy`` is each one's reported (test-split) accuracy."""

    subnets: tuple[SubnetProfile, ...]
    max_batch: int

    @property
    def size(self) -> int:
        return len(self.subnets)

    def latency_ns(self, subnet: int, batch: int) -> int:
        return self.subnets[subnet].latency_ns[batch - 1]

    def with_overhead(self, per_batch_ns: int = 0, per_sample_ns: int = 0) -> "Profile":
        """The serving cost model: profiled compute plus what the server spends per batch and per sample
        around it (hand-over, response sending). Policies decide on this, not on bare compute."""
        if per_batch_ns < 0 or per_sample_ns < 0:
            raise ValueError("overheads must be >= 0")
        if not per_batch_ns and not per_sample_ns:
            return self
        subnets = tuple(dataclasses.replace(s, latency_ns=tuple(lat + per_batch_ns + per_sample_ns * (b + 1)
                                                                for b, lat in enumerate(s.latency_ns)))
                        for s in self.subnets)
        return Profile(subnets, self.max_batch)

    def lowest_index_with_accuracy(self, min_accuracy: float) -> int | None:
        """The lowest index from which every SubNet up is at or above ``min_accuracy`` (None if the most accurate
        is not). SubNets are ordered by the accuracy they were chosen on; the accuracy reported is measured on
        another split and may dip by noise, so a floor keeps the whole range above it."""
        lowest = None
        for s in reversed(self.subnets):
            if s.accuracy < min_accuracy:
                break
            lowest = s.index
        return lowest

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> "Profile":
        try:
            entries = data["subnets"]
        except (KeyError, TypeError):
            raise ProfileError("profile needs a 'subnets' list") from None
        if not isinstance(entries, list) or not entries:
            raise ProfileError("profile 'subnets' must be a non-empty list")
        max_batch = int(data.get("max_batch_size", 0)) or len(entries[0].get("latency_ms", {}))
        subnets = []
        for i, entry in enumerate(entries):
            where = f"profile subnets[{i}]"
            try:
                acc = float(entry["accuracy"])
                lat = entry["latency_ms"]
                latency = tuple(int(round(float(lat[str(b)]) * 1e6)) for b in range(1, max_batch + 1))
            except (KeyError, TypeError, ValueError) as exc:
                raise ProfileError(f"{where} needs 'accuracy' and 'latency_ms' for batch 1..{max_batch}: {exc}") from None
            if not 0.0 <= acc <= 1.0:
                raise ProfileError(f"{where} accuracy {acc} is outside [0, 1]")
            if any(not math.isfinite(v) or v <= 0 for v in latency):
                raise ProfileError(f"{where} latencies must be positive")
            # A batch is never planned faster than a smaller one (the policies bisect latency by batch size): a
            # measured median below a smaller batch's is noise, and counts as that batch's.
            latency = tuple(itertools.accumulate(latency, max))
            subnets.append(SubnetProfile(i, str(entry.get("id", i)), acc, latency, entry.get("config"),
                                         int(entry.get("params", 0))))
        # ordered by the accuracy they were chosen on (validation), if the profile has it
        rank = [float(e.get("validation_accuracy", e["accuracy"])) for e in entries]
        if any(a > b for a, b in zip(rank, rank[1:])):
            raise ProfileError("profile subnets must be sorted by ascending (validation) accuracy")
        return Profile(tuple(subnets), max_batch)
