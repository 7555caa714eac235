"""Pure membership logic: records, completion decisions and rank assignment.

Nothing here performs I/O, starts threads or reads a clock; callers pass
``now``. ``rdzv.rendezvous.node`` drives these functions over a store.
"""

from rdzv.core.plan import attempt_delay, counts_as_waiting, plan_round
from rdzv.core.ranks import RANK_POLICIES, assign_ranks, natural_key
from rdzv.core.records import JoinRecord, MembersRecord, RankRecord, RoundDoc, RoundState

__all__ = [
    "RANK_POLICIES",
    "JoinRecord",
    "MembersRecord",
    "RankRecord",
    "RoundDoc",
    "RoundState",
    "assign_ranks",
    "attempt_delay",
    "counts_as_waiting",
    "natural_key",
    "plan_round",
]
