"""Threads, and the numerics a record was made under (a record is compared only with one made under the same)."""
import torch

from fuhelpers.device import NUMERICS_ENV, numerics, same_numerics, set_threads


def test_same_numerics_accepts_this_process_and_names_each_difference(monkeypatch):
    for name in NUMERICS_ENV:  # start from no caps, whatever the calling environment sets
        monkeypatch.delenv(name, raising=False)
    here = {**numerics(), "device": "cpu"}
    assert same_numerics(here) is None
    other = {**here, "cpu_capability": "NO_SUCH_CAPABILITY", "threads": str(torch.get_num_threads() + 5)}
    reason = same_numerics(other)
    assert "cpu_capability" in reason and "threads" in reason and "cpu:" not in reason
    # a kernel cap set here but not there (or the reverse) is a difference too
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert "onednn_max_cpu_isa" in same_numerics(here)
    assert same_numerics({**here, "onednn_max_cpu_isa": "AVX2"}) is None


def test_set_threads_follows_fuhelpers_threads_then_omp_num_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("FUHELPERS_THREADS", raising=False)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_threads() == 1
        monkeypatch.setenv("FUHELPERS_THREADS", "2")
        assert set_threads() == 2
        assert set_threads(1) == 1
    finally:
        torch.set_num_threads(before)


def test_resolve_device_prefers_the_argument_then_the_model_then_the_cpu():
    from fuhelpers.device import resolve_device

    net = torch.nn.Linear(2, 2)
    assert resolve_device("cpu", net) == torch.device("cpu")
    assert resolve_device(None, net) == next(net.parameters()).device
    assert resolve_device(None, torch.nn.ReLU()) == torch.device("cpu")      # no parameters: the CPU
    assert resolve_device() == torch.device("cpu")
    assert resolve_device("meta", net) == torch.device("meta")               # the argument wins
