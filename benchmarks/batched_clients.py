"""Many small models at once: one FedAvg round of G clients, in turn (fl.InProcess) against stacked (BatchedClients).

Setting: G IID clients x 512 Fashion-MNIST images, one local epoch, batch 32, SGD (lr 0.05, momentum 0.9), fp32,
CPU. Models of at most 50k parameters: an MLP (784-32-10), and the chapters' CNN at two small widths. For each
(model, G) the two paths alternate (in turn, batched, in turn, ...) from the same initial model, each repeat one
whole round timed; the table gives the median seconds, their ratio and the largest relative difference of the
averaged weights between the two paths (float rounding only: the batches are the same).

    .venv/bin/python benchmarks/batched_clients.py               # about two minutes on 2 cores
    .venv/bin/python benchmarks/batched_clients.py --quick       # seconds: checks it runs

Timings mean something only on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from fuhelpers import data, fl, models, partition
from fuhelpers.batched import BatchedClients
from fuhelpers.device import numerics, set_threads

MODELS = {
    "MLP 784-32-10": lambda: models.MLP(784, (32,), 10),
    "CNN 8/16, fc 32": lambda: models.MnistCNN(width=(8, 16), hidden=32),
    "CNN 16/32, fc 64": lambda: models.MnistCNN(width=(16, 32), hidden=64),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, nargs="+", default=[16, 32], help="numbers of models G (default 16 32)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats of each path (default 5)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--quick", action="store_true", help="64 images per client, 2 repeats")
    return p.parse_args(argv)


def one_round(make, clients, runtime):
    torch.manual_seed(0)
    net = make()
    config = fl.FedConfig(num_rounds=1, lr=0.05)
    start = time.perf_counter()
    if runtime is None:
        fl.train(net, clients, config, progress=False)
    else:
        with fl.client_runtime(runtime):
            fl.train(net, clients, config, progress=False)
    return time.perf_counter() - start, net


def max_rel_diff(a, b) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max(((sa[k] - sb[k]).abs().max() / sa[k].abs().max().clamp(min=1e-12)).item() for k in sa)


def main(argv=None) -> None:
    args = parse_args(argv)
    per, repeats = (64, 2) if args.quick else (512, args.repeats)
    threads = set_threads(args.threads)
    train_set = data.load_dataset("fashion_mnist", "train", download=False)
    info = numerics()
    print(f"# one FedAvg round, G IID clients x {per} Fashion-MNIST images, batch 32, fp32; {repeats} repeats "
          f"alternating; cpu {info['cpu']}, torch {info['torch']}, threads {threads}")
    print(f"{'model':<18}{'params':>8}{'G':>5}{'in turn s':>11}{'batched s':>11}{'speed-up':>10}{'max rel diff':>14}")
    for name, make in MODELS.items():
        for g in args.clients:
            parts = partition.iid(train_set.y.numpy()[: g * per], g, seed=0)
            clients = [train_set.subset(p) for p in parts]
            one_round(make, clients[:2], None), one_round(make, clients[:2], BatchedClients())  # warm-up
            times = {"seq": [], "bat": []}
            for _ in range(repeats):
                s, seq = one_round(make, clients, None)
                times["seq"].append(s)
                s, bat = one_round(make, clients, BatchedClients())
                times["bat"].append(s)
            t_seq, t_bat = statistics.median(times["seq"]), statistics.median(times["bat"])
            print(f"{name:<18}{models.count_parameters(make()):>8}{g:>5}{t_seq:>11.3f}{t_bat:>11.3f}"
                  f"{t_seq / t_bat:>9.2f}x{max_rel_diff(seq, bat):>14.1e}")


if __name__ == "__main__":
    main()
