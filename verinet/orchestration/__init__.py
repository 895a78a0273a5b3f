"""How verinet talks to its members: one protocol (:mod:`.protocol`), in-process members and
opening a config's members (:mod:`.local`), views of a caller (:mod:`.views`) and the solve /
cross-verify / decide run (:mod:`.verify`). No Ray here: ``verinet.cluster.Ensemble`` is the
Ray implementation of the same protocol."""

from verinet.orchestration.local import LocalMembers, open_members
from verinet.orchestration.protocol import (
    CallResult, Caller, MemberCall, MemberFailure, QuorumError, check_quorum,
)
from verinet.orchestration.verify import VerifyRun, cross_verify, run_verification, solve, verdicts_from_scores
from verinet.orchestration.views import SubsetCaller, VirtualMembers

__all__ = ["CallResult", "Caller", "LocalMembers", "MemberCall", "MemberFailure", "QuorumError", "SubsetCaller",
           "VerifyRun", "VirtualMembers", "check_quorum", "cross_verify", "open_members", "run_verification",
           "solve", "verdicts_from_scores"]
