"""Retries, timeouts, interrupts and a failed step that is retried.

``fetch`` times out once, fails once and succeeds on its third attempt under its ``RetryPolicy``.
The run pauses after ``fetch`` and before ``approve`` (a human-in-the-loop point). ``publish`` has no
retries and fails once: the step is discarded, the error is recorded in ``state.errors``, and running
again re-runs the same frontier.
"""

from __future__ import annotations

import logging
import sys

import trio

from treadle import (
    END,
    START,
    AppRunner,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    NodeRunError,
    Paused,
    RetryPolicy,
    StateSnapshot,
    StepOptions,
    VersionedState,
)


class Fetch:
    """A node written as a class with an async ``run``; it counts its own attempts."""

    def __init__(self) -> None:
        self.attempts = 0

    async def run(self, snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        self.attempts += 1
        print(f"  fetch attempt {self.attempts}")
        if self.attempts == 1:
            await trio.sleep(10)  # longer than the node's timeout: NodeTimeoutError, retried
        if self.attempts == 2:
            raise ConnectionError("upstream reset the connection")
        return NodePartial(extra={"document": "draft v1"})


async def approve(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    return NodePartial(messages=[Message.assistant(f"approved {snapshot.extra['document']}")])


class Publish:
    def __init__(self) -> None:
        self.calls = 0

    async def run(self, snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("the publishing service is down")
        return NodePartial(extra={"published": True})


app = (
    GraphBuilder()
    .add_node(
        "fetch",
        Fetch(),
        retry=RetryPolicy(max_attempts=3, initial_interval=0.01, jitter=False),
        timeout=0.05,
    )
    .add_node("approve", approve)
    .add_node("publish", Publish())
    .add_edge(START, "fetch")
    .add_edge("fetch", "approve")
    .add_edge("approve", "publish")
    .add_edge("publish", END)
    .compile()
)


async def main() -> None:
    # The node actor logs each retry (at INFO, logger "treadle.node"); show those lines.
    logging.basicConfig(stream=sys.stdout, format="  %(name)s: %(message)s")
    logging.getLogger("treadle.node").setLevel(logging.INFO)
    async with AppRunner(app) as runner:
        await runner.create_session("job", VersionedState.with_user_message("publish the draft"))

        result = await runner.run_step("job", StepOptions(interrupt_after=["fetch"]))
        assert isinstance(result, Paused)
        assert result.report is not None
        print(f"paused {result.reason.kind} {result.reason.node} at step {result.report.step}")

        result = await runner.run_step("job", StepOptions(interrupt_before=["approve"]))
        assert isinstance(result, Paused)
        assert result.report is None  # paused before anything ran
        view = await runner.get_session("job")
        print(
            f"paused {result.reason.kind} {result.reason.node}: step {view.step}, "
            f"frontier {list(view.frontier)}, document {view.state.extra['document']!r}"
        )

        await runner.run_step("job")  # approved: run the step without the interrupt

        try:
            await runner.run_step("job")
        except NodeRunError as exc:
            print(f"NodeRunError: node={exc.node} step={exc.step} cause={exc.cause!r}")
        view = await runner.get_session("job")
        error = view.state.errors[-1]
        print(
            f"after the failure: step {view.step}, frontier {list(view.frontier)}, "
            f"published={'published' in view.state.extra}"
        )
        print(
            f"recorded error: scope={error.scope.kind}:{error.scope.name}@{error.scope.step} "
            f"{error.error}"
        )

        result = await runner.run_step("job", StepOptions(interrupt_each_step=True))
        assert isinstance(result, Paused)
        assert result.report is not None
        print(
            f"paused {result.reason.kind} at step {result.report.step}: "
            f"ran {list(result.report.ran_nodes)}, completed={result.report.completed}"
        )

        final = await runner.run_until_complete("job")  # nothing left to run: returns the state
        view = await runner.get_session("job")
    print(
        f"completed at step {view.step}: published={final.extra['published']}, "
        f"errors={len(final.errors)}"
    )


if __name__ == "__main__":
    trio.run(main)
