"""Several server processes on one port: a listening socket each, and their supervisor.

Each worker binds its own socket with SO_REUSEPORT, so the kernel spreads incoming
connections over the workers by their addresses. (One socket shared by all workers,
as uvicorn's own `--workers` does, lets whichever worker wakes first accept a whole
burst of connections: with long-lived client connections one worker then serves
nearly everything while the others idle.) The supervisor starts the workers, starts
another when one dies, and stops them all on SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

QUICK_EXIT_SECONDS = 5.0  # a worker that dies sooner than this after starting...
QUICK_EXITS_ALLOWED = 3  # ...this many times in a row means it cannot start at all


class WorkersFailed(RuntimeError):
    """The workers cannot start (they keep exiting right after starting)."""


def reuseport_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket that other processes may bind to the same address too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def supervise(target: Callable[..., Any], args: tuple[Any, ...], workers: int) -> None:
    """Run `workers` processes of `target(*args)` until SIGTERM/SIGINT; replace any that die."""
    context = multiprocessing.get_context("spawn")
    stopping = False

    def stop(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}

    def start() -> tuple[BaseProcess, float]:
        process = context.Process(target=target, args=args, name="kubewrit-worker")
        process.start()
        return process, time.monotonic()

    running = [start() for _ in range(workers)]
    quick_exits = 0
    try:
        while not stopping:
            wait([process.sentinel for process, _ in running], timeout=0.5)
            for index, (process, started) in enumerate(running):
                if process.is_alive() or stopping:
                    continue
                lived = time.monotonic() - started
                quick_exits = quick_exits + 1 if lived < QUICK_EXIT_SECONDS else 0
                if quick_exits > QUICK_EXITS_ALLOWED:
                    raise WorkersFailed(
                        f"workers keep exiting right after starting (last: code "
                        f"{process.exitcode}); see the log above"
                    )
                log.warning(
                    "worker %s exited (code %s) after %.1fs; starting another",
                    process.pid,
                    process.exitcode,
                    lived,
                )
                running[index] = start()
    finally:
        for process, _ in running:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes what it has in hand
        for process, _ in running:
            process.join(timeout=15)
            if process.is_alive():
                process.kill()
                process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
