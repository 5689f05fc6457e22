"""Training over several processes (GPUs or machines): data parallel with ``torch.distributed``.

Every process holds the whole networks, built from the same seed, and trains on its share of each
step's global batch (:meth:`stainlab.training.data.TileSampler.step_batch`: the same samples a single
process would draw). After each backward pass the gradients are averaged over the processes
(all-reduce) before the optimiser step, so with losses that are batch means every process takes the
single-process step. This is DistributedDataParallel's arithmetic; the DDP wrapper itself is not used
because a GAN step runs a discriminator several times and with its parameters frozen in between, which
its reducer only allows with ``find_unused_parameters`` and static-graph caveats. On GPUs the
BatchNorm layers become SyncBatchNorm (batch statistics of the global batch); on the CPU (gloo, which
SyncBatchNorm does not support) each process normalises by its share.

Processes start either with ``torchrun --nproc_per_node N -m stainlab train ...`` (the environment
says rank and world size) or with ``stainlab train ... --nproc N`` (:func:`spawn`, one machine). Only
rank 0 writes the run folder.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist

from stainlab.errors import InputError, StainlabError
from stainlab.threads import limit_threads, usable_cores


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run folder and shows progress."""
        return self.rank == 0

    def average_gradients(self, parameters) -> None:
        """Each gradient replaced by its mean over the processes."""
        if self.size == 1:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if grads:
            flat = torch.cat([g.reshape(-1) for g in grads])  # one message, not one per tensor
            dist.all_reduce(flat)
            flat /= self.size
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()

    def average_values(self, values: dict[str, float]) -> dict[str, float]:
        """Logged loss values averaged over the processes (so log.csv reads as one process's)."""
        if self.size == 1 or not values:
            return values
        on = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces GPU tensors only
        tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=on)
        dist.all_reduce(tensor)
        return dict(zip(values, (tensor / self.size).tolist()))

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def current_world() -> World:
    """The world of an initialised process group, else a single process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def launched_size() -> int:
    """Processes that ``torchrun`` (or :func:`spawn`) started, from the environment (1 if none)."""
    return int(os.environ.get("WORLD_SIZE", 1))


def launched_rank() -> int:
    """This process's rank from the environment (0 if not launched as one of several)."""
    return int(os.environ.get("RANK", 0))


def join(device: str) -> World:
    """Join the process group the environment describes (NCCL for CUDA devices, gloo otherwise); on
    CUDA each process takes the GPU of its local rank, on the CPU its share of the cores."""
    size = launched_size()
    if size == 1 or dist.is_initialized():
        return current_world()
    on_gpu = torch.device(device).type == "cuda"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if on_gpu:
        torch.cuda.set_device(local_rank)
    else:
        limit_threads(max(1, usable_cores() // size))
    dist.init_process_group("nccl" if on_gpu else "gloo")
    return current_world()


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def check_split(batch_size: int, size: int, resumed: bool = False) -> None:
    """:class:`InputError` unless a global batch of ``batch_size`` splits evenly over ``size`` processes."""
    if size > 1 and batch_size % size:
        fix = ("use a number of processes that divides it (a resumed run keeps its batch size)" if resumed else
               f"use a batch size that is a multiple of {size} (--set batch_size=N) or another number of processes")
        raise InputError(f"a batch of {batch_size} does not split over {size} processes; {fix}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _entry(rank: int, size: int, port: int, results, fn, args) -> None:
    """One spawned process: runs ``fn``, and hands rank 0's result, any error (as one line) and rank 0's
    warnings to the parent through ``results`` as ``(kind, value)`` messages."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(size), LOCAL_WORLD_SIZE=str(size))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            result = fn(*args)
        except Exception as error:  # the raise below makes start_processes stop the other processes
            plain = isinstance(error, StainlabError)
            results.put(("error", error if plain else
                         RuntimeError(f"training process {rank}: {type(error).__name__}: {error}")))
            raise
        finally:
            if rank == 0:
                results.put(("warnings", [(str(w.message), w.category) for w in caught]))
            leave()
    if rank == 0:
        results.put(("result", result))


def spawn(size: int, fn, *args):
    """Run ``fn(*args)`` in ``size`` new processes on this machine that form one process group; returns
    rank 0's result, its warnings issued again here (the command line shows them as its own). An error in
    any process ends them all and is raised here: a :class:`StainlabError` as itself, anything else as
    a one-line ``RuntimeError`` naming the process."""
    import torch.multiprocessing as mp

    results = mp.get_context("spawn").SimpleQueue()
    context = mp.start_processes(_entry, args=(size, _free_port(), results, fn, args), nprocs=size,
                                 start_method="spawn", join=False)
    received: dict = {}
    spawn_log = logging.getLogger("torch.multiprocessing.spawn")
    level = spawn_log.level
    spawn_log.setLevel(logging.ERROR)  # not its "Terminating process ..." line beside our error
    try:
        done = False
        while not done:
            while not results.empty():  # read while the processes run: a large result fills the pipe
                kind, value = results.get()
                received.setdefault(kind, value)
            try:
                done = context.join(timeout=0.5)
            except mp.ProcessRaisedException:
                while not results.empty():
                    kind, value = results.get()
                    received.setdefault(kind, value)
                if "error" in received:
                    raise received["error"] from None
                raise
        while not results.empty():
            kind, value = results.get()
            received.setdefault(kind, value)
    finally:
        spawn_log.setLevel(level)
        for message, category in received.get("warnings", []):
            warnings.warn(message, category, stacklevel=2)
    return received.get("result")
