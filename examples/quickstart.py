"""Quickstart: a two-node graph run inside Trio, step by step, streamed, and persisted to SQLite.

Run it with ``python examples/quickstart.py``; it writes ``quickstart.db`` in the working directory.
"""

from __future__ import annotations

from pathlib import Path

import trio

from treadle import (
    END,
    START,
    AppRunner,
    Completed,
    Fresh,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    Resumed,
    StateSnapshot,
    VersionedState,
)

DB = "quickstart.db"


async def greet(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """An async node: reads the snapshot, emits an event, returns its writes."""
    name = snapshot.messages[-1].content
    await ctx.emit("greet", f"greeting {name}")
    return NodePartial(messages=[Message.assistant(f"Hello, {name}!")], extra={"greeted": name})


def shout(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """A plain function node: runs inline on the Trio thread."""
    return NodePartial(messages=[Message.assistant(snapshot.messages[-1].content.upper())])


app = (
    GraphBuilder()
    .add_node("greet", greet)
    .add_node("shout", shout)
    .add_edge(START, "greet")
    .add_edge("greet", "shout")
    .add_edge("shout", END)
    .compile()
)


async def one_call() -> None:
    final = await app.invoke(VersionedState.with_user_message("Ada"))
    print("invoke:", [m.content for m in final.messages])


async def step_by_step() -> None:
    async with AppRunner(app) as runner:
        await runner.create_session("s1", VersionedState.with_user_message("Grace"))
        while True:
            result = await runner.run_step("s1")
            assert isinstance(result, Completed)
            report = result.report
            print(
                f"step {report.step}: ran {list(report.ran_nodes)}, next {list(report.next_frontier)}"
            )
            if report.completed:
                break
        view = await runner.get_session("s1")
        print("extra:", dict(view.state.extra))


async def streaming() -> None:
    state = VersionedState.with_user_message("Linus")
    async with app.invoke_streaming(state, session_id="stream") as run:
        async for event in run.events:
            print(f"event #{event.seq} {event.scope}: {event.message}")
        final = await run.result()
    print("streamed final:", final.messages[-1].content)


async def persisted() -> None:
    url = f"sqlite:///{DB}"
    # A first runner runs one step and closes; every step was checkpointed to the file.
    async with AppRunner(app, checkpointer=url) as runner:
        init = await runner.create_session("s2", VersionedState.with_user_message("Barbara"))
        assert isinstance(init, Fresh)
        await runner.run_step("s2")
    # A second runner (here, or in another process later) resumes the session from the file.
    async with AppRunner(app, checkpointer=url) as runner:
        init = await runner.create_session("s2")
        assert isinstance(init, Resumed)
        print(f"resumed s2 at step {init.step}")
        final = await runner.run_until_complete("s2")
        history = await runner.get_state_history("s2")
    print("history:", [(info.step, list(info.ran_nodes)) for info in history])
    print("persisted final:", final.messages[-1].content)


async def main() -> None:
    await one_call()
    await step_by_step()
    await streaming()
    await persisted()


if __name__ == "__main__":
    Path(DB).unlink(missing_ok=True)  # start from an empty database on every run
    trio.run(main)
