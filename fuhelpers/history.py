"""What history-based unlearning (FedEraser, DPUL) needs the server to have kept.

A :class:`History` holds, per round ``t``, the global model after the round
(index 0 is the initial model) and the uploads of the clients it was asked to
record, in memory or on disk.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

State = dict[str, torch.Tensor]


def _cpu_copy(state: State) -> State:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


class History:
    """Per-round global models and chosen clients' uploads.

    Parameters
    ----------
    record_clients : "all" or iterable of int
        Clients whose uploads are kept; ``()`` keeps global models only.
    directory : str or Path, optional
        Keep states on disk in this folder (created; one file per state)
        instead of in memory. ``"temp"`` makes a temporary folder.

    Notes
    -----
    ``global_model(0)`` is the model before the first round and
    ``global_model(t)`` the aggregate after round ``t``; ``upload(t, c)`` is
    what client ``c`` sent in round ``t`` (1-based), or ``None`` when it did
    not take part.
    """

    def __init__(self, record_clients="all", directory: str | Path | None = None):
        self.record_all = record_clients == "all"
        self.record_clients = set() if self.record_all else set(record_clients)
        if directory == "temp":
            directory = tempfile.mkdtemp(prefix="fuhelpers-history-")
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._globals: list = []
        self._uploads: dict[int, dict[int, object]] = {}
        self.participants: list[list[int]] = []  # per round, 1-based round t at index t-1
        self.weights: list[dict[int, int]] = []  # per round: client -> number of samples
        self.storage_bytes = 0

    def records(self, client: int) -> bool:
        """Whether uploads of ``client`` are kept."""
        return self.record_all or client in self.record_clients

    def _store(self, state: State, name: str):
        state = _cpu_copy(state)
        self.storage_bytes += sum(v.numel() * v.element_size() for v in state.values())
        if self.directory is None:
            return state
        path = self.directory / f"{name}.pt"
        torch.save(state, path)
        return path

    @staticmethod
    def _load(item) -> State:
        return torch.load(item, weights_only=True) if isinstance(item, Path) else item

    def add_global(self, state: State) -> None:
        """Append the global model after the current round (round 0 first)."""
        self._globals.append(self._store(state, f"global_{len(self._globals):05d}"))

    def add_round(self, participants: list[int], weights: dict[int, int]) -> None:
        """Start the record of a new round."""
        self.participants.append(list(participants))
        self.weights.append(dict(weights))

    def add_upload(self, client: int, state: State) -> None:
        """Keep ``client``'s upload for the current round if it is recorded."""
        if self.records(client):
            t = len(self.participants)
            self._uploads.setdefault(t, {})[client] = self._store(state, f"upload_{t:05d}_{client:04d}")

    @property
    def num_rounds(self) -> int:
        """Rounds recorded (global models minus the initial one)."""
        return max(len(self._globals) - 1, 0)

    def global_model(self, t: int) -> State:
        """Global state after round ``t`` (``t = 0``: initial model; negative counts from the end)."""
        return self._load(self._globals[t])

    def upload(self, t: int, client: int) -> State | None:
        """Client ``client``'s upload in round ``t`` (1-based), or None if absent."""
        if not self.records(client):
            raise KeyError(f"client {client}'s uploads were not recorded; record_clients={self.record_clients}")
        item = self._uploads.get(t, {}).get(client)
        return None if item is None else self._load(item)

    def clear(self) -> None:
        """Free memory and delete the on-disk folder if any."""
        if self.directory is not None and self.directory.exists():
            shutil.rmtree(self.directory)
        self._globals, self._uploads = [], {}
