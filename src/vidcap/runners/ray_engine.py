"""Many hosts: the host coordinator (multigpu.py) with Ray actors for workers, one per GPU (or tensor-parallel
group, or two CPUs of a cluster without GPUs), each running worker.run_worker. Actors ship their parts to the
driver, which alone writes them (the actors' hosts need not see the output's disk); an actor lost with its
node has its unsaved rows handed to the others and a new actor takes its place.

The driver talks to an actor through its `exchange` method (the coordinator's queued messages in, the
worker's out), one call in flight per actor, so both directions keep their order. Reaching the cluster and
noticing a lost head are in ray_cluster.py.
"""

from __future__ import annotations

import os
import pickle
import queue
import shlex
import sys
import threading
from collections import deque
from dataclasses import replace
from typing import Any

import ray

from ..config import RunConfig
from ..console import FilteredStderr
from ..errors import FatalRunError, UsageError, first_line
from ..gpus import parse_gpus, visible_gpus
from ..knobs import knob
from ..session import Executor, Job, Recorder, WorkerReport
from .multigpu import Coordinator
from .ray_cluster import RAY_CPP_LINE, HeadWatch, connect, forget_ray, gcs_address, run_environment
from .worker import ChunkSource, WorkerSpec, run_worker

FLUSH_ENV = "VIDCAP_RAY_FLUSH_SECONDS"


# -- in the actor ---------------------------------------------------------------------------------------
class RayWorker:
    """A Ray actor: worker.run_worker in a thread. The actor is the loop's link (send/poll/recv over two queues
    `exchange` fills and empties) and its part store (a part goes to the driver as a message, before its ack)."""

    def __init__(self, spec: WorkerSpec, blob: bytes, opts, env: dict):
        os.environ.update(env)  # the secret variables, before the stage (and its backend) is unpickled
        if not spec.on_cpu:  # the GPUs Ray gave this actor (a tensor-parallel group's followers use them too)
            spec = WorkerSpec(spec.wid, visible_gpus()[: spec.tp], spec.decode_workers)
        self.inbound: queue.SimpleQueue = queue.SimpleQueue()
        self.outbound: queue.SimpleQueue = queue.SimpleQueue()
        self.ready: deque = deque()
        self.source = ChunkSource(self)
        args = (spec, blob, self, opts, self.source)
        self.thread = threading.Thread(target=run_worker, args=args, name="vidcap-worker", daemon=True)
        self.thread.start()

    def exchange(self, msgs: list, wait: float = 0.2) -> tuple[list, bool]:
        """Called by the driver: hand the worker `msgs`; return what it sent (waiting up to `wait` s for a first
        message) and whether its loop has ended (then nothing more will come)."""
        for msg in msgs:
            self.inbound.put(msg)
        running = self.thread.is_alive()  # before reading: what it sent before it ended is read below
        out = []
        try:
            out.append(self.outbound.get(timeout=wait) if running else self.outbound.get_nowait())
            while True:
                out.append(self.outbound.get_nowait())
        except queue.Empty:
            pass
        return out, not running

    # -- the link, as the worker's ChunkSource uses it
    def send(self, msg) -> None:
        self.outbound.put(msg)

    def poll(self, timeout: float) -> bool:
        if not self.ready:
            try:
                self.ready.append(self.inbound.get(timeout=timeout) if timeout > 0 else self.inbound.get_nowait())
            except queue.Empty:
                return False
        return True

    def recv(self):
        return self.ready.popleft()

    # -- the part store, as the worker's recorder uses it
    def recorder(self, stage, opts, worker: str, watcher) -> Recorder:
        return Recorder(stage, self, opts, watcher)

    def write_part(self, rows: list[dict]) -> None:
        self.source.send(("part", rows))


# -- in the driver ----------------------------------------------------------------------------------------
class ActorLink:
    """The driver's end of an actor (the shape of multigpu.ProcessLink): messages to the worker wait for the
    next `exchange` call; its answers are read from `inbox`."""

    pid = None  # the actor's process is Ray's

    def __init__(self, actor, pool: RayExecutor):
        self.actor, self.pool = actor, pool
        self.outbox: list = []
        self.inbox: deque = deque()
        self.ref: Any = None  # the exchange call in flight (a Ray ObjectRef)
        self.gone: str | None = None

    def send(self, msg) -> None:
        self.outbox.append(msg)

    def call(self) -> None:
        if self.ref is None and self.gone is None:
            self.ref, self.outbox = self.actor.exchange.remote(self.outbox), []

    def collect(self) -> None:
        try:
            msgs, ended = ray.get(self.ref)
        except ray.exceptions.RayError as exc:  # the actor died, or its node did
            self.gone = f"was lost ({first_line(exc, 200)})"
        else:
            self.inbox.extend(msgs)
            if ended:
                self.gone = "ended"
        self.ref = None

    def poll(self, timeout: float) -> bool:
        if not self.inbox and self.ended() is None:
            self.pool.wait([self], timeout)
        return bool(self.inbox) or self.ended() is not None

    def recv(self):
        if self.inbox:
            return self.inbox.popleft()
        raise EOFError

    def ended(self) -> str | None:
        return self.gone

    def join(self, timeout: float) -> None:
        self.poll(timeout)

    def stop(self, force: bool) -> None:
        self.close()
        self.gone = self.gone or "was stopped"  # (what it had not shipped is done again by the next run)

    def close(self) -> None:
        if not self.pool.watch.lost:  # a dead head would not answer
            ray.kill(self.actor, no_restart=True)


class HeadLost(Exception):
    """The cluster's head stopped answering mid-run."""


class RayExecutor(Executor):
    """The coordinator's workers are Ray actors (one per GPU or tensor-parallel group, or CPU actors sized
    from the cluster's CPUs); this process alone plans and writes the parts."""

    name, unit = "ray", "actors"

    def __init__(
        self,
        gpus: str | None,
        tp: int,
        address: str | None,
        env: list[str] | None = None,
        max_actors: int | None = None,
    ):
        if max_actors is not None and max_actors < 1:
            raise UsageError(f"--ray-actors must be at least 1, not {max_actors}.")
        self.gpus, self.tp, self.address, self.max_actors = gpus, tp, address, max_actors
        self.env, self.secret_env = run_environment(env)  # a name that is not set is refused before the run

    def run(self, job: Job) -> list[WorkerReport]:
        todo = job.rows()
        if not len(todo):
            return []
        started = not ray.is_initialized()
        quiet = FilteredStderr(RAY_CPP_LINE) if started and FilteredStderr.applies() else None
        coordinator: Coordinator | None = None
        lost = False
        try:
            if started:
                connect(
                    self.address,
                    {"env_vars": self.env} if self.env else {},
                    num_cpus=None if self.address else os.cpu_count() or 1,
                )
            self.watch = HeadWatch(gcs_address() if self.address else None)
            try:
                specs, gpus_each = self._specs(job, -(-len(todo) // max(1, job.stage.batch_size)))
                self.blob, self.spares, self.started = pickle.dumps(job.stage), len(specs), 0
                cpus = float(knob("VIDCAP_RAY_ACTOR_CPUS"))  # its decode processes are not reserved
                self.actor = ray.remote(RayWorker).options(num_cpus=cpus, num_gpus=gpus_each)
                coordinator = Coordinator(job, specs, self)
                return coordinator.run(todo)
            finally:
                self.watch.stop()
        except HeadLost:
            lost = True
            raise FatalRunError(
                f"the Ray cluster at {self.address} stopped answering mid-run (its head is gone); "
                f"the {coordinator.saved() if coordinator else 0} rows finished so far are saved, so start the "
                f"cluster again and resume with: {resume_command()}"
            ) from None
        finally:
            if lost:
                forget_ray()  # Ray's threads may still write: fd 2 stays filtered until the process ends
            else:
                if started and ray.is_initialized():
                    ray.shutdown()
                if quiet:
                    quiet.restore()

    # -- the coordinator's pool: one actor per worker spec
    def launch(self, spec: WorkerSpec, opts: RunConfig) -> ActorLink:
        self.started += 1
        # parts reach the driver at least this often: a lost driver or head costs at most these seconds of rows
        opts = replace(opts, tuning=replace(opts.tuning, part_seconds=min(opts.part_seconds, knob(FLUSH_ENV))))
        return ActorLink(self.actor.remote(spec, self.blob, opts, self.secret_env), self)

    def wait(self, links: list[ActorLink], timeout: float) -> list[ActorLink]:
        """The links with something to read (messages, or their end) within `timeout` seconds."""
        if self.watch.lost:
            raise HeadLost()
        ready = [link for link in links if link.inbox or link.ended() is not None]
        if not ready:
            for link in links:
                link.call()
            calls = {link.ref: link for link in links if link.ref is not None}
            done, _ = ray.wait(list(calls), num_returns=1, timeout=timeout)
            if done:  # and any other answer already here
                done, _ = ray.wait(list(calls), num_returns=len(calls), timeout=0)
            for ref in done:
                calls[ref].collect()
            ready = [link for link in links if link.inbox or link.ended() is not None]
        return ready

    def replace(self, spec: WorkerSpec) -> WorkerSpec | None:
        """A new actor for one that was lost (its node went away), while spares last."""
        if self.watch.gone():  # the head went, and the actors with it
            raise HeadLost()
        if self.spares <= 0:
            return None
        self.spares -= 1
        return WorkerSpec(f"ray{self.started}", spec.devices, spec.decode_workers)

    def _specs(self, job: Job, batches: int) -> tuple[list[WorkerSpec], int]:
        """The actors, and the GPUs each takes: one per GPU (or TP group) of the cluster, or on a cluster
        without GPUs one per two CPUs (the other CPU decodes); never more than --ray-actors, nor than there are
        batches."""
        text = (self.gpus or "").strip().lower()
        cap = min(self.max_actors or batches, max(1, batches))
        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
        if not text.startswith("cpu:") and text not in ("", "all"):
            gpus = len(parse_gpus(text, [str(i) for i in range(gpus)]))
        if text.startswith("cpu:"):
            n, each = min(len(parse_gpus(text)), cap), 0
        elif gpus == 0:
            if self.gpus:
                raise UsageError("the Ray cluster has no GPU; use --gpus cpu:N for CPU actors, or drop --gpus.")
            n, each = min(max(1, cpus // 2), cap), 0
        elif gpus % self.tp:
            raise UsageError(f"--tp {self.tp} does not divide the {gpus} GPUs of the Ray cluster.")
        else:
            n, each = min(gpus // self.tp, cap), self.tp
        total = job.opts.workers  # decode processes, shared out as on one host; by default the CPUs less one per actor
        if total is None:
            total = 0 if job.stage.default_workers == 0 else max(n, cpus - n)
        decode = 0 if total <= 0 else max(1, total // n)
        devices = ["cuda"] * self.tp if each else ["cpu"]
        return [WorkerSpec(f"ray{i}", devices, decode) for i in range(n)], each


def resume_command() -> str:
    """The command line of this run, to paste again."""
    args = sys.argv[1:]
    return "vidcap " + shlex.join(args) if args else "the same command"
