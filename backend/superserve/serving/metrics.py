"""What the serving core reports. This base records nothing; the Triton adapter exports it to Prometheus."""

from __future__ import annotations

__all__ = ["Metrics", "OUTCOMES"]

OUTCOMES = ("on_time", "late", "shed", "error", "cancelled")


class Metrics:
    def outcome(self, outcome: str, count: int = 1) -> None:
        """A request ended: on_time, late, shed (refused UNAVAILABLE), error (bad request / failure), cancelled."""

    def queue_length(self, length: int) -> None:
        """Waiting requests after a change."""

    def decision(self, slack_ns: int, decision_ns: int) -> None:
        """The head's slack when a batch was chosen, and how long the policy took to choose it."""

    def batch(self, subnet: int, size: int, accuracy: float) -> None:
        """A batch of ``size`` samples ran on ``subnet`` (profiled accuracy ``accuracy``)."""
