"""Crash and resume: a run killed mid-flight (SIGKILL, no cleanup at all) resumes in a new process
from its last stored step and ends exactly where an uninterrupted run would.

Run it from the repository root: ``python examples/crash_and_resume.py``. It writes
``crash_and_resume.db`` in a temporary directory. The first process runs a loop and kills itself at
step 7; the second process opens the same SQLite file, resumes the session and finishes it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

from treadle import (
    END,
    START,
    AppRunner,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    StateSnapshot,
    VersionedState,
)

CRASH_AT_STEP = 7
LAST_ROUND = 12


async def work(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    if ctx.step == CRASH_AT_STEP and os.environ.get("CRASH_DEMO_KILL"):
        print(f"  process {os.getpid()}: killing myself during step {ctx.step}", flush=True)
        if hasattr(signal, "SIGKILL"):
            os.kill(os.getpid(), signal.SIGKILL)  # no finally blocks, no flushing: a real crash
        os._exit(137)
    done = snapshot.extra.get("done", 0) + 1
    return NodePartial(messages=[Message.assistant(f"round {done}")], extra={"done": done})


def more(snapshot: StateSnapshot) -> str:
    return END if snapshot.extra["done"] >= LAST_ROUND else "work"


app = (
    GraphBuilder()
    .add_node("work", work)
    .add_edge(START, "work")
    .add_conditional_edges("work", more, path_map=["work", END])
    .compile()
)


async def run_session(db: Path) -> None:
    """What each process does: open the store, create or resume the session, run it to the end."""
    async with AppRunner(app, checkpointer=f"sqlite:///{db}") as runner:
        init = await runner.create_session("demo", VersionedState.with_user_message("start"))
        print(f"  process {os.getpid()}: create_session -> {init}", flush=True)
        final = await runner.run_until_complete("demo")
        history = await runner.get_state_history("demo")
        print(f"  process {os.getpid()}: finished, done={final.extra['done']}", flush=True)
        print(f"  stored steps: {[info.step for info in history]}", flush=True)
        print(f"  last message: {final.messages[-1].content!r}", flush=True)


def child(db: Path, *, crash: bool) -> int:
    env = {**os.environ, "CRASH_DEMO_KILL": "1" if crash else ""}
    return subprocess.run([sys.executable, __file__, "child", str(db)], env=env).returncode


def main() -> None:
    if sys.argv[1:2] == ["child"]:
        trio.run(run_session, Path(sys.argv[2]))
        return
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "crash_and_resume.db"
        print("run 1 (will crash):")
        code = child(db, crash=True)
        print(f"  exit code {code}: the process died without closing anything")
        print("run 2 (a new process, same file):")
        code = child(db, crash=False)
        print(f"  exit code {code}")


if __name__ == "__main__":
    main()
