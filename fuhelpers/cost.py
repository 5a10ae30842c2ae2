"""One way to count what unlearning costs: seconds, rounds, bytes and FLOPs.

Every method returns a :class:`Cost`; costs add up, and ratios to Retrain are
computed in one place (:meth:`Cost.ratio_to`) so that every chapter and the
benchmark compare methods the same way.
"""
from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields

import torch
from torch.utils.flop_counter import FlopCounterMode

MB = 1e6  # decimal megabytes, as the papers report communication


@dataclass
class Cost:
    """Resources spent by one training or unlearning run.

    Attributes
    ----------
    seconds : float
        Wall-clock time.
    rounds : int
        Federated rounds (each a broadcast, local training and an upload).
    bytes_up, bytes_down : int
        Bytes sent client -> server and server -> client, all clients summed.
    flops : float
        Floating-point operations of training (forward + backward), counted
        with ``torch.utils.flop_counter`` on one batch and scaled by samples
        processed; client and server work together.
    storage_bytes : int
        What the method needs to keep between training and unlearning
        (e.g. a stored history); 0 for methods that keep nothing.
    """

    seconds: float = 0.0
    rounds: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    flops: float = 0.0
    storage_bytes: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @property
    def comm_mb(self) -> float:
        """Communication in both directions, in MB (10^6 bytes)."""
        return (self.bytes_up + self.bytes_down) / MB

    def as_dict(self) -> dict[str, float]:
        """Plain dict with ``comm_mb`` added, for tables and JSON."""
        return {**asdict(self), "comm_mb": self.comm_mb}

    def add_round(self, clients: int, down: int, up: int | None = None, uploads: int | None = None) -> "Cost":
        """Count one federated round: ``down`` bytes sent to each of ``clients``, ``up`` bytes back from each of
        ``uploads`` clients (default: the same payload, from the same clients). Returns ``self``."""
        up = down if up is None else up
        uploads = clients if uploads is None else uploads
        self.rounds += 1
        self.bytes_down += down * clients
        self.bytes_up += up * uploads
        return self

    def add_compute(self, samples: float, flops_per_sample: float) -> "Cost":
        """Count ``samples`` forward and backward passes of ``flops_per_sample`` each. Returns ``self``."""
        self.flops += samples * flops_per_sample
        return self

    def ratio_to(self, reference: "Cost") -> dict[str, float]:
        """Each measure divided by the same measure of ``reference`` (usually Retrain).

        A zero reference gives ``nan`` rather than a division error.
        """
        mine, ref = self.as_dict(), reference.as_dict()
        return {k: (mine[k] / ref[k] if ref[k] else float("nan")) for k in mine}


@contextmanager
def stopwatch(cost: Cost):
    """Add the wall time of the ``with`` block to ``cost.seconds``."""
    start = time.perf_counter()
    try:
        yield cost
    finally:
        cost.seconds += time.perf_counter() - start


def tensor_bytes(tensors) -> int:
    """Bytes needed to send ``tensors`` (an iterable of tensors) uncompressed."""
    return int(sum(t.numel() * t.element_size() for t in tensors))


_FLOPS_CACHE: dict[tuple, float] = {}


def train_flops_per_sample(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs of one forward + backward pass per sample, measured on the batch ``(x, y)``.

    Counted once per model class, parameter shapes and input shape, then
    cached; the count is linear in the batch size for the layers used here.
    The count runs on a copy, so the model (its gradients and BatchNorm
    statistics) is left untouched.
    """
    key = (type(model).__name__, tuple(p.shape for p in model.parameters()), tuple(x.shape[1:]))
    if key not in _FLOPS_CACHE:
        probe = copy.deepcopy(model)
        counter = FlopCounterMode(display=False)
        with counter:
            torch.nn.functional.cross_entropy(probe(x), y).backward()
        _FLOPS_CACHE[key] = counter.get_total_flops() / len(x)
    return _FLOPS_CACHE[key]
