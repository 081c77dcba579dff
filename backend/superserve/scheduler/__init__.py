"""Scheduling: the EDF queue, the load estimate, the offline profile and the policies (SlackFit and baselines).
Pure Python."""

from .load import LoadEstimate
from .policies import DEFAULT_BUCKETS, Decision, Policy, make_policy
from .profile import Profile, ProfileError, SubnetProfile
from .queue import EDFQueue, QueuedRequest

__all__ = ["DEFAULT_BUCKETS", "Decision", "Policy", "make_policy", "Profile", "ProfileError", "SubnetProfile",
           "EDFQueue", "QueuedRequest", "LoadEstimate"]
