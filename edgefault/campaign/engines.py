"""Where cells run: local worker processes (the default) or Ray actors, behind one small interface.

An engine is opened with a :class:`~edgefault.campaign.worker.WorkerPayload`, accepts up to
``capacity`` cells in flight, and hands back finished records as they come. Every worker keeps
two cells queued so it never waits for the main process to write a result. A worker that dies
(a crash inside ONNX Runtime, say) turns its cells in flight into error records and is
replaced; the scheduler retries them once like any failed cell.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Connection, wait
from typing import Any
from urllib.parse import urlsplit

from edgefault.campaign.cells import Cell
from edgefault.campaign.worker import CellRunner, WorkerPayload
from edgefault.errors import EdgefaultError

DEPTH = 2  # cells queued per worker: one running, one ready


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count).

    Example:
        >>> available_cores() >= 1
        True
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class LocalEngine:
    """``workers`` processes on this machine, each with ``threads`` ONNX Runtime intra-op threads.

    Example:
        >>> engine = LocalEngine(workers=2, threads=1)
        >>> engine.describe()
        '2 local worker processes x 1 thread'
    """

    def __init__(self, workers: int, threads: int):
        self.workers, self.threads = workers, threads
        self._payload: WorkerPayload | None = None
        self._procs: list[subprocess.Popen] = []
        self._conns: list[Connection] = []
        self._queued: list[list[tuple[int, Cell, int]]] = []

    @property
    def capacity(self) -> int:
        """Cells that may be in flight at once (two per worker)."""
        return DEPTH * self.workers

    def describe(self) -> str:
        """A short label for reports.

        Example:
            >>> LocalEngine(1, 2).describe()
            '1 local worker process x 2 threads'
        """
        plural = "es" if self.workers > 1 else ""
        return f"{self.workers} local worker process{plural} x {self.threads} thread{'s' if self.threads > 1 else ''}"

    def open(self, payload: WorkerPayload, cells: int) -> None:
        """Start the worker processes (no more than there are ``cells`` to run) and send each the payload.
        """
        self._payload = payload
        self.workers = max(1, min(self.workers, cells))
        started = [self._launch() for _ in range(self.workers)]  # all interpreters boot at once
        for process, conn in started:
            conn.send(payload)
            self._procs.append(process)
            self._conns.append(conn)
            self._queued.append([])

    def _launch(self) -> tuple[subprocess.Popen, Connection]:
        # A fresh interpreter that imports only the worker code: multiprocessing's spawn would
        # re-import the caller's main module (the whole CLI, torch included) in every worker.
        parent, child = socket.socketpair()
        process = subprocess.Popen(
            [sys.executable, "-c", f"from edgefault.campaign.engines import serve; serve({child.fileno()})"],
            pass_fds=[child.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,  # stdout is --json's
        )
        child.close()  # only the worker holds its end now: its death shows up here as EOF
        return process, Connection(parent.detach())

    def submit(self, task: int, cell: Cell, attempt: int) -> None:
        """Queue a cell on the least busy worker.
        """
        slot = min(range(self.workers), key=lambda i: len(self._queued[i]))
        self._queued[slot].append((task, cell, attempt))
        try:
            self._conns[slot].send((cell, attempt))
        except OSError:
            pass  # the worker died: collect() sees its socket close and reports its queued cells

    def collect(self) -> list[tuple[int, dict[str, Any] | str]]:
        """Block until at least one cell finishes; return (task id, record) pairs.

        A dead worker's cells come back with the error text in place of a record.
        """
        finished = []
        for conn in wait([c for c, q in zip(self._conns, self._queued) if q]):
            slot = self._conns.index(conn)
            try:
                record = conn.recv()
            except (EOFError, OSError):
                how = f"WorkerDied: worker process exited with code {_exit_code(self._procs[slot])}"
                finished.extend((task, how) for task, _, _ in self._queued[slot])
                conn.close()
                process, conn = self._launch()
                conn.send(self._payload)
                self._procs[slot], self._conns[slot], self._queued[slot] = process, conn, []
                continue
            task, _, _ = self._queued[slot].pop(0)  # a worker answers in the order it was given cells
            finished.append((task, record))
        return finished

    def close(self) -> None:
        """Stop the workers: closing its socket ends a worker; stragglers are terminated (calling again does nothing).
        """
        for conn in self._conns:
            conn.close()
        for process in self._procs:
            if _exit_code(process) is None:
                process.terminate()
                process.wait()
        self._procs, self._conns, self._queued = [], [], []


def _exit_code(process: subprocess.Popen, timeout: float = 5.0) -> int | None:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def serve(fd: int) -> None:
    """A local worker's main loop on socket ``fd``: read the payload, then run cells until the socket closes.

    The socket closes when the main process closes it or dies, so no worker outlives a killed campaign.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle, not a traceback here
    conn = Connection(fd)
    try:
        runner = CellRunner(conn.recv())
        while True:
            cell, attempt = conn.recv()
            conn.send(runner.run(cell, attempt))
    except (EOFError, OSError):
        return


def check_ray_address(address: str, timeout: float = 3.0) -> None:
    """Fail fast, with one line, when a Ray address cannot be reached; ``auto`` needs no check.

    Example:
        >>> check_ray_address("127.0.0.1:1")
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: cannot reach the Ray cluster at 127.0.0.1:1 (connection refused); is Ray running there?
    """
    if address == "auto":
        return
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or port is None:
        raise EdgefaultError(f"`ray` takes auto or HOST:PORT (or ray://HOST:PORT), got {address!r}")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        reason = "connection refused"
    except socket.timeout:
        reason = f"no answer in {timeout:g} s"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    else:
        return
    raise EdgefaultError(f"cannot reach the Ray cluster at {address} ({reason}); is Ray running there?")


class RayEngine:
    """Ray actors running :class:`CellRunner`, one CPU and one ONNX Runtime thread each.

    ``address`` is ``auto`` (an existing local cluster, or a new one started here and stopped
    at the end) or a cluster address; ``workers`` defaults to (and is capped at) the cluster's CPUs.
    Ray is an optional dependency, so its module is imported inside the methods that use it.
    """

    def __init__(self, address: str, workers: int | None = None):
        self.address, self.workers, self.threads = address, workers, 1
        self._started_here = False
        self._actors: list[Any] = []
        self._refs: dict[Any, tuple[int, int, Any]] = {}
        self._queued: list[int] = []
        self._payload_ref = None
        self._actor_class = None
        self._where = address

    @property
    def capacity(self) -> int:
        """Cells that may be in flight at once (two per actor)."""
        return DEPTH * len(self._actors)

    def describe(self) -> str:
        """A short label for reports.

        Example:
            >>> RayEngine("auto", workers=4).describe()
            '4 Ray actors x 1 thread (auto)'
        """
        count = self.workers or 0
        return f"{count} Ray actor{'s' if count != 1 else ''} x 1 thread ({self._where})"

    def connect(self) -> None:
        """Join (or, for ``auto`` with none running, start) a Ray cluster; errors are one line.
        """
        check_ray_address(self.address)
        try:
            import ray
        except ImportError:
            raise EdgefaultError("`ray` needs the ray package (pip install 'edgefault[ray]')") from None
        quiet = dict(logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False)
        try:
            if ray.is_initialized():
                self._where = "this process's Ray"
            elif self.address == "auto":
                try:
                    ray.init(address="auto", **quiet)
                    self._where = "existing local cluster"
                except ConnectionError:
                    ray.init(num_cpus=available_cores(), **quiet)
                    self._started_here, self._where = True, "local cluster started here"
            else:
                ray.init(address=self.address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise EdgefaultError(f"cannot connect to Ray at {self.address} ({' '.join(str(exc).split())[:200]})") from None
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        # Each actor holds a CPU for its lifetime: actors beyond the CPUs would never be placed.
        self.workers = cpus if self.workers is None else min(self.workers, cpus)

    def open(self, payload: WorkerPayload, cells: int) -> None:
        """Put the payload in the object store once and start the actors (no more than ``cells``).
        """
        import ray

        self._payload_ref = ray.put(dataclasses.replace(payload, threads=self.threads))
        self._actor_class = ray.remote(num_cpus=1)(CellRunner)
        self._actors = [self._new_actor() for _ in range(max(1, min(self.workers, cells)))]
        self._queued = [0] * len(self._actors)

    def _new_actor(self):
        return self._actor_class.remote(self._payload_ref)

    def submit(self, task: int, cell: Cell, attempt: int) -> None:
        """Queue a cell on the least busy actor.
        """
        slot = min(range(len(self._actors)), key=lambda i: self._queued[i])
        self._queued[slot] += 1
        actor = self._actors[slot]
        self._refs[actor.run.remote(cell, attempt)] = (task, slot, actor)

    def collect(self) -> list[tuple[int, dict[str, Any] | str]]:
        """Block until at least one cell finishes; a dead actor's cell comes back as its error text.
        """
        import ray

        ready, _ = ray.wait(list(self._refs), num_returns=1)
        finished = []
        for ref in ready:
            task, slot, actor = self._refs.pop(ref)
            self._queued[slot] -= 1
            try:
                finished.append((task, ray.get(ref)))
            except ray.exceptions.RayError as exc:
                finished.append((task, f"RayError: {' '.join(str(exc).split())[:300]}"))
                if isinstance(exc, ray.exceptions.RayActorError) and self._actors[slot] is actor:
                    self._actors[slot] = self._new_actor()  # once per dead actor, not once per lost cell
        return finished

    def close(self) -> None:
        """Release the actors; stop the cluster only if this engine started it (calling again does nothing).
        """
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors, self._refs = [], {}
        if self._started_here:
            ray.shutdown()
            self._started_here = False
