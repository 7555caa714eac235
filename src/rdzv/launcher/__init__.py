"""``rdzv run``'s engine: an elastic agent per node, for any framework.

::

    from rdzv import Rendezvous
    from rdzv.launcher import Agent, LaunchSpec

    spec = LaunchSpec(["python", "train.py"], nproc_per_node=8, max_restarts=3)
    node = Rendezvous("tcp://10.0.0.1:29400", "job1", 2, 4)
    exit_code = Agent(spec, node, on_event=print).run()

``rdzv join`` is the one-shot primitive (one command per node, no restarts);
the agent re-forms the job when members come and go and restarts it, within one
job-wide budget, when a worker fails.
"""

from rdzv.launcher.agent import Agent, AgentInterrupted
from rdzv.launcher.events import (
    Done,
    Event,
    HealthCheckFailed,
    Restart,
    RoundFormed,
    ScaleChange,
    Stopping,
    WorkerFailed,
    WorkersStarted,
)
from rdzv.launcher.report import WorkerFailure
from rdzv.launcher.spec import LaunchSpec, Std

__all__ = [
    "Agent",
    "AgentInterrupted",
    "LaunchSpec",
    "Std",
    "Event",
    "RoundFormed",
    "WorkersStarted",
    "WorkerFailed",
    "WorkerFailure",
    "Restart",
    "ScaleChange",
    "HealthCheckFailed",
    "Stopping",
    "Done",
]
