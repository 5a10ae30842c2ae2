"""The server's side of the messages: a :class:`fuhelpers.fl.ClientRuntime` whose clients are Flower nodes.

Message types (the ClientApp's handlers, :mod:`.client_app`):

``query.describe``   -> ``partition-id``, ``num-examples``: the server maps partitions to node ids once.
``train``            global state, FedConfig (JSON), the client's seed, optional mask -> trained state,
                        ``seen``, ``flops-per-sample``.
``query.curvature``  global state, curvature method, seed, batch size, MC samples -> the client's two Hessian
                        diagonals (forget and retain part; TIS, Eq. 29) and their sample counts.

Flower keeps no per-client state and the server sees only random node ids, so every reply names its
partition; replies are put back in the order the caller asked for, which makes a Flower round aggregate
exactly like an in-process one. Both requests carry the server's torch thread count, which the node uses for
that computation: CPU kernels split their sums by thread, so on one machine the same count gives the same
bits, and a run over Flower reproduces the in-process one exactly.
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Mapping, Sequence

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from ..fl import FedConfig, Trained, derive_seed
from ..unlearn.tis import ClientCurvature


def _arrays(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord({k: v.detach().cpu() for k, v in state.items()})


def _state(record: ArrayRecord, device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in record.to_torch_state_dict().items()}


class FlowerClients:
    """Clients that train and answer queries on Flower nodes, addressed by their ``partition-id``.

    Parameters
    ----------
    grid : flwr.serverapp.Grid
        The ServerApp's grid.
    num_clients : int
        Partitions the run expects; waits (up to ``wait`` seconds) until that many nodes are connected.
    timeout : float, optional
        Seconds to wait for the replies of one round; None waits as long as it takes.
    """

    def __init__(self, grid, num_clients: int, *, wait: float = 120.0, timeout: float | None = None):
        self.grid, self.timeout = grid, timeout
        self.messages = 0            # sent, replies not counted
        self.nodes = self._discover(num_clients, wait)

    def _discover(self, num_clients: int, wait: float) -> dict[int, int]:
        deadline = time.monotonic() + wait
        while len(node_ids := list(self.grid.get_node_ids())) < num_clients:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(node_ids)} Flower nodes connected after {wait:.0f} s; "
                                   f"the run needs one per partition ({num_clients})")
            time.sleep(0.5)
        replies = self._ask({n: RecordDict({"config": ConfigRecord({})}) for n in node_ids},
                            f"{MessageType.QUERY}.describe")
        nodes = {int(r.content["metrics"]["partition-id"]): r.metadata.src_node_id for r in replies}
        if sorted(nodes) != list(range(num_clients)):
            raise RuntimeError(f"nodes report partitions {sorted(nodes)}; expected 0..{num_clients - 1}")
        return nodes

    def _ask(self, contents: Mapping[int, RecordDict], message_type: str) -> list[Message]:
        """Send one message per node id and return the replies (raising on a client's error)."""
        messages = [Message(content=c, dst_node_id=n, message_type=message_type) for n, c in contents.items()]
        self.messages += len(messages)
        replies = list(self.grid.send_and_receive(messages, timeout=self.timeout))
        if len(replies) != len(messages):
            raise TimeoutError(f"{len(replies)} of {len(messages)} {message_type} replies within {self.timeout} s")
        for r in replies:
            if r.has_error():
                raise RuntimeError(f"a client failed on {message_type}: {r.error.reason}")
        return replies

    def _by_partition(self, replies) -> dict[int, Message]:
        return {int(r.content["metrics"]["partition-id"]): r for r in replies}

    def train_round(self, model, state, clients: Sequence, client_ids: Sequence[int], config: FedConfig,
                    round_: int, device, mask=None) -> list[Trained]:
        """One round on the nodes of ``client_ids``; each trains its own partition from ``state``."""
        fed_config = json.dumps(dataclasses.asdict(config))
        contents = {}
        for cid in client_ids:
            content = RecordDict({"arrays": _arrays(state), "config": ConfigRecord(
                {"fed-config": fed_config, "seed": derive_seed(config.seed, round_, cid),
                 "threads": torch.get_num_threads()})})
            if mask is not None:
                content["mask"] = _arrays({k: m.to(torch.uint8) for k, m in mask.items()})
            contents[self.nodes[cid]] = content
        replies = self._by_partition(self._ask(contents, MessageType.TRAIN))
        out = []
        for data, cid in zip(clients, client_ids):
            reply = replies[cid]
            metrics = reply.content["metrics"]
            if int(metrics["num-examples"]) != len(data):
                raise RuntimeError(f"partition {cid} trained on {int(metrics['num-examples'])} samples; the server's "
                                   f"copy of the task has {len(data)}: the two sides built different tasks")
            out.append(Trained(_state(reply.content["arrays"], device), int(metrics["seen"]),
                               float(metrics["flops-per-sample"])))
        return out

    def client_curvatures(self, model, num_clients: int, request, method: str, *, seed: int = 0,
                          batch_size: int = 128, mc_samples: int = 1, device=None) -> list[ClientCurvature]:
        """TIS's query: every client's diagonals on its forget and retain parts (its own request's split)."""
        config = ConfigRecord({"method": method, "seed": seed, "batch-size": batch_size, "mc-samples": mc_samples,
                               "threads": torch.get_num_threads()})
        arrays = _arrays(model.state_dict())
        contents = {self.nodes[c]: RecordDict({"arrays": arrays, "config": config}) for c in range(num_clients)}
        replies = self._by_partition(self._ask(contents, f"{MessageType.QUERY}.curvature"))
        device = device or next(model.parameters()).device
        out = []
        for c in range(num_clients):
            content, metrics = replies[c].content, replies[c].content["metrics"]
            parts = {p: _state(content[p], device) if p in content else None for p in ("forget", "retain")}
            out.append(ClientCurvature(c, int(metrics["n-forget"]), int(metrics["n-retain"]), parts["forget"],
                                       parts["retain"]))
        return out
