"""A driver script for an iterative session: a greenhouse sensor loop that survives a restart.

Each reading is one ``invoke_next``: the reading is merged into the session's state, the graph
(``smooth``, then ``alarm`` when the average is too hot) runs to completion, and every step is
checkpointed to SQLite. Kill the script at any moment and start it again: it resumes the session,
finishes an invocation the kill cut short, and carries on with the next reading.

Run it from the repository root: ``python examples/sensor_loop.py``. It writes ``sensor.db`` in
the working directory (delete it to start over). ``--crash-after N`` kills the process with
SIGKILL after N readings, so you can watch the next run pick up where it stopped.
"""

from __future__ import annotations

import os
import signal
import sys

import trio

from treadle import (
    END,
    START,
    AppRunner,
    GraphBuilder,
    Message,
    NodePartial,
    StateSnapshot,
    VersionedState,
)

SESSION = "greenhouse"
# The sensor's readings (degrees C); tick i is the i-th reading.
READINGS = [24.0, 26.5, 29.0, 31.5, 33.0, 32.5, 30.0, 27.5, 25.0, 31.0, 34.5, 35.0]
WINDOW = 3
TOO_HOT = 30.0


async def smooth(snapshot: StateSnapshot, ctx: object) -> NodePartial:
    window = [*snapshot.extra.get("window", []), snapshot.extra["reading"]][-WINDOW:]
    return NodePartial(extra={"window": window, "avg": round(sum(window) / len(window), 2)})


async def alarm(snapshot: StateSnapshot, ctx: object) -> NodePartial:
    tick = snapshot.extra["tick"]
    note = Message.assistant(f"tick {tick}: average {snapshot.extra['avg']} is too hot")
    return NodePartial(messages=[note], extra={"alarms": snapshot.extra.get("alarms", 0) + 1})


def hot(snapshot: StateSnapshot) -> str:
    return "alarm" if snapshot.extra["avg"] > TOO_HOT else END


app = (
    GraphBuilder()
    .add_node("smooth", smooth)
    .add_node("alarm", alarm)
    .add_edge(START, "smooth")
    .add_conditional_edges("smooth", hot, path_map=["alarm", END])
    .add_edge("alarm", END)
    .compile()
)


async def main(crash_after: int | None) -> None:
    async with AppRunner(app, checkpointer="sqlite:///sensor.db") as runner:
        init = await runner.create_iterative_session(SESSION, VersionedState())
        view = await runner.get_session(SESSION)
        done = view.invocation or 0
        print(f"{type(init).__name__}: step {view.step}, {done} readings already applied")
        if view.invocation_pending:
            # The last run was killed inside an invocation: finish it before the next reading.
            await runner.continue_invocation(SESSION)
            print(f"finished the invocation of tick {done - 1} that was cut short")
        for tick in range(done, len(READINGS)):
            reading = READINGS[tick]
            state = await runner.invoke_next(
                SESSION, NodePartial(extra={"tick": tick, "reading": reading})
            )
            alarms = state.extra.get("alarms", 0)
            print(f"tick {tick}: reading {reading} average {state.extra['avg']} alarms {alarms}")
            if crash_after is not None and tick + 1 - done == crash_after:
                print("killing this process (SIGKILL)", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        await runner.finish_iterative_session(SESSION)
        final = await runner.get_session(SESSION)
        print(
            f"done: {len(READINGS)} readings, {final.state.extra.get('alarms', 0)} alarms, "
            f"step {final.step}"
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    crash_after = int(args[args.index("--crash-after") + 1]) if "--crash-after" in args else None
    trio.run(main, crash_after)
