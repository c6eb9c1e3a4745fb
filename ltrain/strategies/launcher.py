"""Starting the processes of a data-parallel run on one machine, the way torchrun would.

Each process is this same program run again with torchrun's variables (RANK, LOCAL_RANK,
WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) in its environment, so it joins the same
process group as under torchrun. Two callers:

- `run_workers` (the `ltrain` command): starts every rank and supervises them. The first rank
  that fails has the others stopped (SIGTERM, then SIGKILL after a grace period) and is named;
  the exit code is that rank's. Ctrl-C is passed on, so the ranks stop together and save.
- `start_other_ranks` (a Python script calling `Trainer(strategy="ddp", devices=N).fit`): this
  process becomes rank 0 and starts ranks 1..N-1 running the script again, as Lightning does.
"""

from __future__ import annotations

import atexit
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from ltrain.errors import MisconfigurationException

GRACE_SECONDS = 10.0  # how long stopped ranks get to exit before they are killed
PARENT_VARIABLE = "LTRAIN_LAUNCHER_PID"  # the process that started a rank (see follow_parent)


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now (for the rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rerun_command() -> list[str]:
    """The command line that starts this program again (a script, `-m module`, or `ltrain`)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        module = spec.name[: -len(".__main__")] if spec.name.endswith(".__main__") else spec.name
        return [sys.executable, "-m", module, *sys.argv[1:]]
    script = sys.argv[0] if sys.argv else ""
    if script and script != "-c" and os.path.isfile(script):
        return [sys.executable, os.path.abspath(script), *sys.argv[1:]]
    raise MisconfigurationException(
        "strategy='ddp' starts one process per device by running this program again, but it "
        "was not started from a file (an interactive session or `python -c`); run a script, "
        "use `ltrain fit CONFIG`, or start the processes with torchrun"
    )


def _environment(rank: int, world_size: int, port: int) -> dict[str, str]:
    """torchrun's variables for `rank`; like torchrun, one OpenMP thread each unless set."""
    threads = (
        {"OMP_NUM_THREADS": "1"} if world_size > 1 and "OMP_NUM_THREADS" not in os.environ else {}
    )
    return {
        **threads,
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_WORLD_SIZE": str(world_size),
        "GROUP_RANK": "0",
        "NODE_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def _start(
    command: list[str], rank: int, world_size: int, port: int, supervised: bool = False
) -> subprocess.Popen:
    """Start one rank. A `supervised` one (under `run_workers`) gets a session of its own, so a
    terminal's Ctrl-C reaches it once, through the launcher. Each one ends with its parent
    (`follow_parent`): a rank may sit in a collective that nothing else would end."""
    env = {
        **os.environ,
        **_environment(rank, world_size, port),
        PARENT_VARIABLE: str(os.getpid()),
    }
    return subprocess.Popen(command, env=env, start_new_session=supervised)


def follow_parent() -> None:
    """In a rank this module started: be killed when the starting process dies (Linux)."""
    parent = os.environ.get(PARENT_VARIABLE)
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # it died before we asked
        os._exit(1)


def run_workers(world_size: int) -> int:
    """Run this `ltrain` command once per rank and wait; returns the exit code for the whole run.

    One thread per worker waits for it and queues (rank, code) the moment it exits, so the rank
    that failed first is the one named, not a rank that failed because it lost that peer.
    """
    command = rerun_command()
    port = free_port()
    workers = [_start(command, rank, world_size, port, True) for rank in range(world_size)]
    exits: queue.Queue[tuple[int, int]] = queue.Queue()
    for rank, worker in enumerate(workers):
        threading.Thread(
            target=lambda r=rank, w=worker: exits.put((r, w.wait())), daemon=True
        ).start()
    signals_seen: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        signals_seen.append(signum)
        # the first Ctrl-C lets every rank save and stop together; a second one stops at once
        for worker in workers:
            if worker.poll() is not None:
                continue
            if len(signals_seen) > 1:
                worker.kill()
            else:
                worker.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        first_failure = None
        for finished in range(1, world_size + 1):
            while True:
                try:
                    rank, code = exits.get(timeout=0.2)  # wakes up for signal handlers
                    break
                except queue.Empty:
                    continue
            code = 128 - code if code < 0 else code  # killed by a signal: as a shell reports it
            running = world_size - finished
            if code and first_failure is None:
                first_failure = code
                if not signals_seen and running:
                    print(
                        f"error: rank {rank} exited with code {code}; stopping the other "
                        f"{running} rank(s)",
                        file=sys.stderr,
                        flush=True,
                    )
                    _stop(workers)
                elif running:  # stopping on a signal: the rest get time to save, not forever
                    _stop(workers, patience=GRACE_SECONDS)
        return first_failure or 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop(workers: list[subprocess.Popen], patience: float = 0.0) -> None:
    """After `patience` seconds, SIGTERM every running worker; SIGKILL what is left after
    GRACE_SECONDS more."""
    deadline = time.monotonic() + patience
    for worker in workers:
        try:
            worker.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            pass
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    deadline = time.monotonic() + GRACE_SECONDS
    for worker in workers:
        try:
            worker.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def start_other_ranks(world_size: int) -> list[subprocess.Popen]:
    """Make this process rank 0 of `world_size` and start the others running this program again.

    A rank that fails ends rank 0's next collective with an error. When rank 0 exits it waits
    for the others (they run the rest of the script too) and names each one that failed. When
    rank 0 itself dies of an exception, the others may be blocked in a collective waiting for it:
    they get GRACE_SECONDS to end, then are killed.
    """
    command = rerun_command() if world_size > 1 else []
    port = free_port()
    children = [_start(command, rank, world_size, port) for rank in range(1, world_size)]
    os.environ.update(_environment(0, world_size, port))
    if children:
        died: list[bool] = []
        previous_hook = sys.excepthook

        def note_death(*exc_info: Any) -> None:
            died.append(True)
            previous_hook(*exc_info)

        sys.excepthook = note_death
        atexit.register(_wait_for, children, died)
    return children


def _wait_for(children: list[subprocess.Popen], died: list[bool]) -> None:
    deadline = time.monotonic() + GRACE_SECONDS if died else None
    for rank, child in enumerate(children, start=1):
        try:
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0.01)
            code = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            code = child.wait()
            print(f"error: stopped rank {rank}, which waited for rank 0", file=sys.stderr)
            continue
        if code:
            print(f"error: rank {rank} exited with code {code}", file=sys.stderr, flush=True)
