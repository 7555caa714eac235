"""The per-process heartbeat scheduler: one timer and a few workers for every lease."""

from __future__ import annotations

import threading
from collections.abc import Callable

from rdzv.rendezvous.beats import BeatHandle, BeatScheduler


def counting_task(
    runs: list[int], until: int, done: threading.Event, delay: float = 0.01
) -> Callable[[], float | None]:
    def task() -> float | None:
        runs.append(1)
        if len(runs) >= until:
            done.set()
            return None
        return delay

    return task


def test_a_task_runs_again_after_the_delay_it_returns_until_it_returns_none() -> None:
    runs: list[int] = []
    done = threading.Event()
    beats = BeatScheduler(max_workers=2)
    handle = beats.schedule(counting_task(runs, 5, done), 0.0)
    assert done.wait(10)
    assert handle.cancel(wait=5)
    assert len(runs) == 5
    assert beats.scheduled() == 0


def test_cancel_waits_for_a_run_in_progress_and_stops_further_runs() -> None:
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []

    def task() -> float | None:
        runs.append(1)
        started.set()
        release.wait(10)
        return 0.0

    beats = BeatScheduler(max_workers=1)
    handle = beats.schedule(task, 0.0)
    assert started.wait(10)
    assert handle.cancel(wait=0.05) is False  # still running: cancel reports it
    release.set()
    assert handle.cancel(wait=10) is True
    assert beats.scheduled() == 0
    assert len(runs) == 1


def test_a_task_may_cancel_itself_without_waiting_for_itself() -> None:
    finished = threading.Event()
    beats = BeatScheduler(max_workers=1)
    holder: list[BeatHandle] = []

    def task() -> float | None:
        holder[0].cancel(wait=30)
        finished.set()
        return 0.0

    holder.append(beats.schedule(task, 0.0))
    assert finished.wait(10)


def test_a_failing_or_blocked_task_does_not_stop_the_others() -> None:
    blocked = threading.Event()

    def stuck() -> float | None:
        blocked.wait(30)
        return None

    def failing() -> float | None:
        raise RuntimeError("boom")

    runs: list[int] = []
    done = threading.Event()
    beats = BeatScheduler(max_workers=2)
    beats.schedule(stuck, 0.0)
    failed = beats.schedule(failing, 0.0)
    beats.schedule(counting_task(runs, 3, done), 0.0)
    try:
        assert done.wait(10)
        assert failed.cancel(wait=5)  # ended by its error, not rescheduled
    finally:
        blocked.set()


def test_the_pool_grows_while_beats_are_due_and_every_worker_is_busy() -> None:
    release = threading.Event()
    entered: list[int] = []
    all_in = threading.Event()

    def blocking() -> float | None:
        entered.append(1)
        if len(entered) == 6:
            all_in.set()
        release.wait(30)
        return None

    beats = BeatScheduler(max_workers=8)
    for _ in range(6):
        beats.schedule(blocking, 0.0)
    try:
        assert all_in.wait(10), f"only {len(entered)} of 6 blocked beats ran at once"
    finally:
        release.set()
