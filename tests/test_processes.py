"""ClientProcesses (a round's clients in worker processes) against the in-process loop at the same thread count."""
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from conftest import make_blobs, tiny_net
from fuhelpers import fl
from fuhelpers.data import ArrayDataset
from fuhelpers.federation import Federation, Request
from fuhelpers.models import MnistCNN
from fuhelpers.processes import ClientProcesses
from fuhelpers.unlearn import tis


@pytest.fixture(scope="module")
def runtime():
    with ClientProcesses(workers=2, threads=1) as r:   # workers import torch once: the slow part of this file
        yield r


@contextmanager
def one_thread():
    """The reference loop at the workers' thread count, so that both run the same kernels."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def both(runtime, make, clients, config, **kw):
    """The same FedAvg run in this process and in the workers: (reference, in workers)."""
    with one_thread():
        ref = fl.train(make(), clients, config, progress=False, **kw)
    with fl.client_runtime(runtime):
        out = fl.train(make(), clients, config, progress=False, **kw)
    return ref, out


def assert_same_weights(a, b):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(y, x, rtol=1e-6, atol=1e-7, msg=name)


def small_cnn():
    torch.manual_seed(0)
    return MnistCNN(image_size=12, width=(3, 4), hidden=8, kernel_size=3)


def image_clients(sizes, seed=1):
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    data = ArrayDataset(x=torch.rand(n, 1, 12, 12, generator=g), y=torch.randint(0, 10, (n,), generator=g),
                        classes=[str(k) for k in range(10)])
    starts = torch.tensor([0, *sizes]).cumsum(0).tolist()
    return [data.subset(range(a, b)) for a, b in zip(starts, starts[1:])]


def test_unequal_clients_of_a_cnn_with_momentum_and_weight_decay_match_the_loop(runtime):
    clients = image_clients([9, 30, 17])
    config = fl.FedConfig(num_rounds=3, local_epochs=2, batch_size=8, lr=0.05, momentum=0.9, weight_decay=1e-3)
    ref, out = both(runtime, small_cnn, clients, config)
    assert_same_weights(ref.model, out.model)
    assert out.cost.flops == ref.cost.flops and out.cost.rounds == ref.cost.rounds


def test_every_client_trains_from_the_broadcast_state_with_its_own_batches(runtime):
    # one round, so each client's upload is its own local training: a client trained from another's state,
    # or with another client's batches, would differ
    clients = [make_blobs(n=40, seed=s) for s in (0, 1, 2)]
    config = fl.FedConfig(num_rounds=1, local_epochs=1, batch_size=4, lr=0.1, momentum=0.9, seed=5)
    net = tiny_net()
    state = fl.state_copy(net)
    with one_thread():
        ref = fl.train_round(net, state, clients, [3, 4, 5], config, 0, torch.device("cpu"))
    with fl.client_runtime(runtime):
        out = fl.train_round(net, state, clients, [3, 4, 5], config, 0, torch.device("cpu"))
    for r, o in zip(ref, out):
        assert o.seen == r.seen == 40
        for k in r.state:
            torch.testing.assert_close(o.state[k], r.state[k], rtol=1e-6, atol=1e-7)
    assert not torch.equal(out[0].state["1.weight"], out[1].state["1.weight"])


def test_targeted_retraining_mask_and_fixed_step_counts_match_the_loop(runtime):
    clients = image_clients([12, 20])
    net = small_cnn()
    mask = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(2)) < 0.5
            for n, p in net.named_parameters()}
    config = fl.FedConfig(num_rounds=2, local_steps=3, batch_size=4, lr=0.1, momentum=0.5)
    ref, out = both(runtime, small_cnn, clients, config, mask=mask)
    assert_same_weights(ref.model, out.model)
    start = small_cnn().state_dict()
    for n, m in mask.items():   # the masked-out entries never moved
        assert torch.equal(out.model.state_dict()[n][~m], start[n][~m])


def test_the_bf16_fast_path_matches_the_loop(runtime):
    clients = image_clients([16, 24])
    config = fl.FedConfig(num_rounds=2, local_epochs=1, batch_size=8, lr=0.05, momentum=0.9, precision="bf16")
    ref, out = both(runtime, small_cnn, clients, config)
    assert_same_weights(ref.model, out.model)


def test_l2u_trains_in_the_workers_as_in_the_loop_and_counts_the_same_flops(runtime, monkeypatch):
    from fuhelpers.unlearn.foul.l2u import L2UConfig, L2UModel, train_l2u

    def l2u():
        torch.manual_seed(0)
        return L2UModel(1, 10, 12, width=4, causal_dim=6, noncausal_dim=6)

    clients = image_clients([20, 13])
    config = fl.FedConfig(num_rounds=2, local_epochs=1, batch_size=8, lr=0.05, momentum=0.9)
    with one_thread():
        ref = train_l2u(l2u(), clients, config, L2UConfig(), progress=False)
    sent, submit = [], runtime._pool.submit

    def spy(fn, *args):
        sent.append(args[-1])            # what went to a worker with the client: the trainer's fresh copy
        return submit(fn, *args)

    monkeypatch.setattr(runtime._pool, "submit", spy)
    with fl.client_runtime(runtime):
        out = train_l2u(l2u(), clients, config, L2UConfig(), progress=False)
    assert len(sent) == 4 and all(t is not None and t.flops == 0 for t in sent)
    assert_same_weights(ref.model, out.model)
    assert out.cost.flops == ref.cost.flops > 0


def test_a_custom_local_trainer_runs_here(runtime):
    calls = []

    def counting_trainer(model, data, config, generator, device, mask=None):
        calls.append(len(data))          # a closure without runs_in_workers: it trains in this process
        return fl.local_train(model, data, config, generator, device, mask)

    clients = [make_blobs(n=20, seed=0), make_blobs(n=12, seed=1)]
    config = fl.FedConfig(num_rounds=2, local_epochs=1, batch_size=4, lr=0.1)
    ref, out = both(runtime, tiny_net, clients, config, local_trainer=counting_trainer)
    assert calls == [20, 12] * 4
    assert_same_weights(ref.model, out.model)


def test_tis_curvatures_under_the_workers_are_computed_here_as_without_them(runtime):
    # TIS asks every client for its curvature; ClientProcesses only trains, so the query is answered in this
    # process (it used to fail with an AttributeError, e.g. in a benchmark run with --client-processes)
    data = make_blobs(n=45)
    fed = Federation.from_partition(data, [np.arange(0, 15), np.arange(15, 30), np.arange(30, 45)], make_blobs(12, 1))
    request, net = Request.for_samples({0: [0, 3], 2: [1, 2, 7]}), tiny_net(seed=2)
    here = tis.client_curvatures(net, fed, request, "ggn_exact", batch_size=4)
    with fl.client_runtime(runtime):
        there = tis.client_curvatures(net, fed, request, "ggn_exact", batch_size=4)
    assert [(c.client, c.n_forget, c.n_retain) for c in there] == [(c.client, c.n_forget, c.n_retain) for c in here]
    for a, b in zip(here, there):
        for part in ("forget", "retain"):
            assert (getattr(a, part) is None) == (getattr(b, part) is None)
            for name, value in (getattr(a, part) or {}).items():
                assert torch.equal(value, getattr(b, part)[name])


def test_it_refuses_to_run_unstarted_or_off_the_cpu():
    clients = [make_blobs(n=8)]
    net = tiny_net()
    with pytest.raises(RuntimeError, match="not started"):
        ClientProcesses(1).train_round(net, fl.state_copy(net), clients, [0], fl.FedConfig(), 0,
                                       torch.device("cpu"))
    r = ClientProcesses(1)
    r._pool = object()   # started as far as the check goes; the device check comes before any work
    with pytest.raises(ValueError, match="CPU only"):
        r.train_round(net, fl.state_copy(net), clients, [0], fl.FedConfig(), 0, "cuda")


PARENT = """
import os, sys, time
from fuhelpers.processes import ClientProcesses

if __name__ == "__main__":
    with ClientProcesses(workers=2, threads=1) as r:
        busy = [r._pool.submit(time.sleep, 600) for _ in range(2)]   # both workers in the middle of a job
        time.sleep(1)
        print(*r._pool._processes, flush=True)
        time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"     # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_end_when_their_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = []
    try:
        workers += [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(pid) for pid in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers)
    finally:
        parent.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
