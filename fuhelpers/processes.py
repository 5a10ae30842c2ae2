"""A round's clients trained in parallel worker processes on one CPU: a client runtime.

On a small CPU one process does not use its cores well for these models: a training step of the ``cpu``
scale's CNN on a batch of 32 is too small to split over two threads without losing much of the second core
(one thread runs at about 0.64x of two). Clients of a round are independent, so :class:`ClientProcesses`
hands them to ``workers`` processes of ``threads`` threads each instead: every client still trains with
:func:`fuhelpers.fl.local_train` from the broadcast state, with the batches of ``derive_seed(seed, round,
client)``, so the result equals the in-process loop up to the rounding of a different thread count
(``tests/test_processes.py``). Measured with ``make bench`` (path D).

Use it like any runtime; the pool starts on entry (a few seconds: each worker imports torch) and lives
for the whole block::

    with ClientProcesses(workers=2) as runtime, fl.client_runtime(runtime):
        fl.train(net, clients, config)          # FedAvg, Retrain, FT, recoveries: unchanged code

Client data travel once, through shared memory (their tensors are moved there, values untouched; the
workers only read them), so ``/dev/shm`` must hold them (all of Fashion-MNIST: about 190 MB; Docker's default
of 64 MB is too small). The model travels as a fresh copy for each client, and the trained states come back
as ordinary tensors. CPU only.

A custom local trainer (``fl.train(..., local_trainer=...)``) trains in the workers when it says so with
``runs_in_workers = True``: it must then pickle, and keep its totals (FOUL's L2U counts FLOPs) through two
methods, ``fresh()``, a copy with empty totals that each client's worker receives, and ``merge(other)``, which
adds a worker's copy back. Any other trainer (a closure, say) trains in this process.
"""
from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor

import torch
from torch import multiprocessing as mp
from torch import nn

from .fl import FedConfig, State, Trained, derive_seed, flops_per_sample, local_train, state_copy

__all__ = ["ClientProcesses"]


def _init_worker(threads: int, parent: int) -> None:
    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int, every: float = 0.5) -> None:
    """End this worker once ``parent`` is gone, even in the middle of a client.

    A parent that is killed (a stopped session, ``kill``) never shuts its pool down; without this its
    workers would finish their client and then wait forever, each holding a copy of torch and the data.
    """
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


def _train_client(model: nn.Module, data, config: FedConfig, round_: int, client_id: int,
                  mask: Mapping[str, torch.Tensor] | None, trainer=None) -> tuple[State, int, float, object]:
    gen = torch.Generator().manual_seed(derive_seed(config.seed, round_, client_id))
    cpu = torch.device("cpu")
    seen = (local_train if trainer is None else trainer)(model, data, config, gen, cpu, mask)
    return state_copy(model), seen, flops_per_sample(model, data, config.batch_size, cpu), trainer


class ClientProcesses:
    """A client runtime whose clients train in ``workers`` processes of ``threads`` threads each.

    Parameters
    ----------
    workers : int, optional
        Worker processes; default: the number of cores.
    threads : int, optional
        Torch threads per worker; default: this process's threads divided by ``workers`` (at least 1).
    """

    def __init__(self, workers: int | None = None, threads: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.threads = max(1, threads or torch.get_num_threads() // self.workers)
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ClientProcesses:
        self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                         initializer=_init_worker, initargs=(self.threads, os.getpid()))
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (also done on leaving the ``with`` block)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    @staticmethod
    def takes_local_trainer(trainer) -> bool:
        """Whether ``trainer`` trains in the workers (``runs_in_workers``); else ``fl.train_round`` trains it here."""
        return bool(getattr(trainer, "runs_in_workers", False))

    def train_round(self, model: nn.Module, state: State, clients: Sequence, client_ids: Sequence[int],
                    config: FedConfig, round_: int, device: torch.device,
                    mask: Mapping[str, torch.Tensor] | None = None, local_trainer=None) -> list[Trained]:
        if self._pool is None:
            raise RuntimeError("ClientProcesses is not started: use it as `with ClientProcesses() as r:`")
        if torch.device(device).type != "cpu":
            raise ValueError(f"ClientProcesses trains on the CPU only, got device {device}")
        model.load_state_dict(state)
        if local_trainer is not None and not self.takes_local_trainer(local_trainer):
            raise ValueError("this local trainer does not say runs_in_workers: fl.train_round trains it in process")
        jobs = [self._pool.submit(_train_client, copy.deepcopy(model), data, config, round_, cid, mask,
                                  None if local_trainer is None else local_trainer.fresh())
                for data, cid in zip(clients, client_ids)]
        out = []
        for job in jobs:
            trained, seen, fps, used = job.result()
            if used is not None:
                local_trainer.merge(used)
            # own copies: tensors received from a worker live in shared memory, one file descriptor each
            out.append(Trained({k: v.clone() for k, v in trained.items()}, seen, fps))
        return out
