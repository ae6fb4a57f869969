"""Supervision: exact restart times under backoff, crash windows, escalation and cancellation."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from hypothesis import given, settings

from treadle.actors import (
    DEFAULT_RESTART_POLICY,
    ChildCrash,
    ChildHandle,
    ChildState,
    ChildStatistics,
    RestartPolicy,
    open_supervisor,
    supervise,
)


class Boom(Exception):
    pass


class Fatal(BaseException):
    """Stands in for KeyboardInterrupt and friends: never a crash to restart."""


def crashing(
    starts: list[float], crashes: int, *, then: float | None = None
) -> Callable[[], Awaitable[None]]:
    """A child body that records each start time and crashes at once ``crashes`` times.

    Afterwards it returns after ``then`` seconds, or runs forever when ``then`` is None.
    """

    async def body() -> None:
        starts.append(trio.current_time())
        if len(starts) <= crashes:
            raise Boom(f"boom {len(starts)}")
        if then is None:
            await trio.sleep_forever()
        await trio.sleep(then)

    return body


def test_restart_policy_backoff_grows_and_is_capped() -> None:
    policy = RestartPolicy(initial_backoff=0.1, backoff_factor=2.0, max_backoff=1.0)
    assert [policy.backoff(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.backoff(10_000) == 1.0
    assert RestartPolicy(initial_backoff=0.0).backoff(3) == 0.0
    assert RestartPolicy(5, 10.0, 0.1, 2.0, 5.0) == DEFAULT_RESTART_POLICY
    with pytest.raises(ValueError, match="consecutive_crashes must be >= 1"):
        policy.backoff(0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_restarts": -1}, "max_restarts must be >= 0"),
        ({"within": 0.0}, "within must be > 0"),
        ({"initial_backoff": -0.1}, "backoffs must satisfy"),
        ({"initial_backoff": 6.0}, "backoffs must satisfy"),
        ({"backoff_factor": 0.5}, "backoff_factor must be >= 1"),
    ],
)
def test_restart_policy_is_validated(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]


def test_child_state_values_are_lowercase() -> None:
    assert [s.value for s in ChildState] == [
        "starting",
        "running",
        "backing_off",
        "stopped",
        "failed",
    ]


async def test_crashing_child_restarts_at_exact_backoff_times_and_sibling_is_unaffected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        starts: list[float] = []
        ticks: list[float] = []
        crashes: list[ChildCrash] = []

        async def sibling() -> None:
            for _ in range(3):
                await trio.sleep(0.25)
                ticks.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            handle: ChildHandle = await nursery.start(
                lambda task_status: supervise(
                    "flaky",
                    crashing(starts, 3, then=1.0),
                    on_crash=crashes.append,
                    task_status=task_status,
                )
            )
            sibling_handle: ChildHandle = await nursery.start(supervise, "sibling", sibling)
            await trio.sleep(0.05)
            assert handle.state is ChildState.BACKING_OFF
        assert starts == [0.0, 0.1, 0.1 + 0.2, 0.1 + 0.2 + 0.4]
        assert ticks == [0.25, 0.5, 0.75]
        assert [(c.child, c.when, c.occurrence, str(c.error)) for c in crashes] == [
            ("flaky", 0.0, 1, "boom 1"),
            ("flaky", 0.1, 2, "boom 2"),
            ("flaky", 0.1 + 0.2, 3, "boom 3"),
        ]
        assert trio.current_time() == 0.1 + 0.2 + 0.4 + 1.0
        assert handle.statistics() == ChildStatistics(
            name="flaky",
            state=ChildState.STOPPED,
            crashes=3,
            restarts=3,
            last_error="Boom: boom 3",
            last_error_at=0.1 + 0.2,
        )
        assert sibling_handle.statistics() == ChildStatistics(
            name="sibling",
            state=ChildState.STOPPED,
            crashes=0,
            restarts=0,
            last_error=None,
            last_error_at=None,
        )


async def test_too_many_crashes_escalate_and_cancel_siblings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        starts: list[float] = []
        handles: list[ChildHandle] = []
        policy = RestartPolicy(max_restarts=2, within=10.0)
        with pytest.RaisesGroup(pytest.RaisesExc(Boom, match="boom 3")) as group:
            async with trio.open_nursery() as nursery:
                handles.append(
                    await nursery.start(
                        lambda task_status: supervise(
                            "doomed",
                            crashing(starts, 100),
                            policy=policy,
                            task_status=task_status,
                        )
                    )
                )
                handles.append(await nursery.start(supervise, "sibling", trio.sleep_forever))
        # Three crashes (two restarts allowed) at 0, 0.1, 0.3: it gives up at the third.
        assert starts == [0.0, 0.1, 0.1 + 0.2]
        assert trio.current_time() == 0.1 + 0.2
        assert group.value.exceptions[0].__notes__ == [
            "supervised child 'doomed' gave up after 3 crashes within 10 s"
        ]
        assert [h.state for h in handles] == [ChildState.FAILED, ChildState.STOPPED]
        assert handles[0].statistics().crashes == 3
        assert handles[0].statistics().restarts == 2


async def test_without_escalation_a_failed_child_just_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        starts: list[float] = []
        async with trio.open_nursery() as nursery:
            handle: ChildHandle = await nursery.start(
                lambda task_status: supervise(
                    "quiet",
                    crashing(starts, 100),
                    policy=RestartPolicy(max_restarts=0),
                    escalate=False,
                    task_status=task_status,
                )
            )
            await handle.wait_finished()
            assert handle.state is ChildState.FAILED
            nursery.start_soon(trio.sleep, 1)
        assert starts == [0.0]
        assert trio.current_time() == 1.0


async def test_crashes_older_than_the_window_are_forgotten(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Each run lasts 2 s, longer than the 1 s window: no crash ever counts twice, so the child is
    # never given up on and every backoff is the initial one.
    with trio.fail_after(100):
        starts: list[float] = []

        async def slow_crasher() -> None:
            starts.append(trio.current_time())
            if len(starts) == 5:
                return
            await trio.sleep(2.0)
            raise Boom("late")

        policy = RestartPolicy(max_restarts=1, within=1.0, initial_backoff=0.5)
        async with trio.open_nursery() as nursery:
            handle: ChildHandle = await nursery.start(
                lambda task_status: supervise(
                    "slow", slow_crasher, policy=policy, task_status=task_status
                )
            )
        expected = [0.0]
        for _ in range(4):
            expected.append(expected[-1] + 2.0 + 0.5)
        assert starts == expected
        assert handle.statistics().crashes == 4
        assert handle.state is ChildState.STOPPED


async def test_on_crash_errors_are_logged_not_propagated(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    def bad_callback(crash: ChildCrash) -> None:
        raise RuntimeError("callback bug")

    with trio.fail_after(100):
        starts: list[float] = []
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: supervise(
                    "c",
                    crashing(starts, 1, then=0.0),
                    on_crash=bad_callback,
                    task_status=task_status,
                )
            )
        assert starts == [0.0, 0.1]
        [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert "on_crash callback of child 'c' raised" in record.getMessage()


async def test_cancelling_a_handle_stops_only_that_child(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        ticks: list[float] = []

        async def sibling() -> None:
            for _ in range(2):
                await trio.sleep(1)
                ticks.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            running: ChildHandle = await nursery.start(supervise, "running", trio.sleep_forever)
            backing_off: ChildHandle = await nursery.start(
                lambda task_status: supervise(
                    "backing-off",
                    crashing([], 1),
                    policy=RestartPolicy(initial_backoff=5.0),
                    task_status=task_status,
                )
            )
            await nursery.start(supervise, "sibling", sibling)
            await trio.sleep(0.5)
            assert running.state is ChildState.RUNNING
            assert backing_off.state is ChildState.BACKING_OFF
            running.cancel("no longer needed")
            backing_off.cancel()
            await running.wait_finished()
            await backing_off.wait_finished()
            assert trio.current_time() == 0.5
        assert ticks == [1.0, 2.0]
        assert (running.state, backing_off.state) == (ChildState.STOPPED, ChildState.STOPPED)
        assert backing_off.statistics().restarts == 0


async def test_cancellation_and_base_exceptions_are_never_crashes() -> None:
    with trio.fail_after(1):
        handles: list[ChildHandle] = []
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                handles.append(await nursery.start(supervise, "cancelled", trio.sleep_forever))
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()

        async def fatal() -> None:
            raise Fatal

        with pytest.RaisesGroup(Fatal):
            async with trio.open_nursery() as nursery:
                handles.append(await nursery.start(supervise, "fatal", fatal))
        assert [h.statistics().crashes for h in handles] == [0, 0]
        assert [h.state for h in handles] == [ChildState.STOPPED, ChildState.STOPPED]


async def test_supervisor_owns_named_children(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        async with open_supervisor("sinks") as sup:
            a = await sup.start("a", trio.sleep_forever)
            b = await sup.start("b", crashing([], 2), policy=RestartPolicy(max_restarts=5))
            with pytest.raises(
                ValueError, match="supervisor 'sinks' already has a running child 'a'"
            ):
                await sup.start("a", trio.sleep_forever)
            assert sup.children() == [a, b]
            await trio.sleep(1)
            assert b.statistics().restarts == 2
            a.cancel()
            await a.wait_finished()
            a2 = await sup.start("a", trio.sleep_forever)  # a stopped child's name is free again
            assert sup.children() == [a2, b]
            sup.cancel()
        assert [h.state for h in (a, a2, b)] == [ChildState.STOPPED] * 3
        assert trio.current_time() == 1.0


async def test_supervisor_escalation_surfaces_as_exception_group(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100), pytest.RaisesGroup(Boom):
        async with open_supervisor("s") as sup:
            await sup.start("doomed", crashing([], 100), policy=RestartPolicy(max_restarts=1))
            await sup.start("other", trio.sleep_forever)


# -- restart times against a model of the policy -----------------------------------------------


@given(
    runs=st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 3.0]), min_size=1, max_size=12),
    max_restarts=st.integers(0, 4),
    within=st.sampled_from([0.5, 1.0, 2.0, 10.0]),
    factor=st.sampled_from([1.0, 2.0, 3.0]),
    random_state=st.random_module(),
)
@settings(deadline=None, max_examples=80)
def test_restart_schedule_matches_the_policy(
    runs: list[float], max_restarts: int, within: float, factor: float, random_state: object
) -> None:
    # Run i lasts runs[i] then crashes; after the listed runs the child returns cleanly.
    policy = RestartPolicy(
        max_restarts=max_restarts, within=within, initial_backoff=0.25, backoff_factor=factor
    )

    expected_starts: list[float] = []
    window: list[float] = []
    now = 0.0
    expected_state = ChildState.STOPPED
    for duration in [*runs, None]:
        expected_starts.append(now)
        if duration is None:
            break
        now = now + duration
        window = [t for t in window if now - t < within] + [now]
        if len(window) > max_restarts:
            expected_state = ChildState.FAILED
            break
        now = now + policy.backoff(len(window))

    async def main() -> tuple[list[float], ChildHandle]:
        starts: list[float] = []

        async def body() -> None:
            starts.append(trio.current_time())
            if len(starts) > len(runs):
                return
            await trio.sleep(runs[len(starts) - 1])
            raise Boom

        async with trio.open_nursery() as nursery:
            handle: ChildHandle = await nursery.start(
                lambda task_status: supervise(
                    "c", body, policy=policy, escalate=False, task_status=task_status
                )
            )
        return starts, handle

    starts, handle = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert starts == expected_starts
    assert handle.state is expected_state
    assert handle.statistics().restarts == len(expected_starts) - 1
