"""Throughput of one FedAvg setting, three ways, in one process: is the package's engine as fast as plain PyTorch?

Setting: the full Fashion-MNIST training set split IID over 10 clients (6000 images each), one local epoch
per round, batch 32, SGD (lr 0.01, momentum 0.9), CPU, the model of the ``cpu`` scale (the TIS paper's CNN:
conv 32/64 5x5, fc 512; ``fuhelpers.experiments.registry.CPU``).

  A  plain fp32 FedAvg written here by hand (its own loop and averaging; no fuhelpers.fl)
  B  the package's engine, ``fl.train`` with ``precision="fp32"`` (the reference every chapter uses)
  C  ``fl.train`` with ``precision="bf16"`` (autocast bfloat16, channels-last, fp32 master weights)
  D  C with the clients of each round trained in parallel processes, one per thread of the others
     (``fuhelpers.processes.ClientProcesses``; the pool starts before the timing, as the warm-up runs do)

On a CPU that only emulates bf16 (no AVX512-BF16 or AMX: ``fuhelpers.precision.native_bf16``) bf16 is several
times slower than fp32, so C and the bf16 half of the accuracy comparison are skipped and D runs in fp32: the
arithmetic the experiment runner uses there (``fuhelpers.precision.effective_precision``).

The repeats alternate A B C D A B C D ... so that a change of machine load hits all four alike; each repeat
trains ``--rounds`` rounds from the same initial model and is timed as a whole (evaluation excluded).
The run also measures the matmul peak (``torch.mm`` of 2048 x 2048, fp32 and bf16) and reports
GFLOP/s with the package's FLOP counter (``fl.flops_per_sample``: forward + backward of one batch).
Accuracy: the test accuracy of each path after its rounds, then fp32 and bf16 over ``--seeds`` seeds.

    .venv/bin/python benchmarks/fedavg_throughput.py              # full: a few minutes on 2 cores
    .venv/bin/python benchmarks/fedavg_throughput.py --quick      # tiny subset, seconds: checks it runs

Timings mean something only on an otherwise idle machine. The last line is
``fedavg_round_speedup_vs_plain_fp32: X.XX`` (median time of A / median time of D, the package's fastest path on
a CPU); the line before it gives C's ratio (one process).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from fuhelpers import data, fl, metrics, models, partition
from fuhelpers.device import numerics, set_threads
from fuhelpers.experiments.registry import CPU
from fuhelpers.precision import effective_precision
from fuhelpers.processes import ClientProcesses

NUM_CLIENTS, BATCH, LR, MOMENTUM = 10, 32, 0.01, 0.9
FAST = effective_precision("bf16", "cpu")  # "fp32" where this CPU only emulates bf16


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=1, help="FedAvg rounds per timed repeat (default 1)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats of each path (default 3; --quick: 2)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: FUHELPERS_THREADS, OMP_NUM_THREADS, else all cores)")
    p.add_argument("--seeds", type=int, default=3, help="seeds of the accuracy comparison (default 3)")
    p.add_argument("--quick", action="store_true",
                   help="64 images per client, 1000 test images, small matmul: a smoke check in seconds")
    return p.parse_args(argv)


def load(quick: bool):
    train_set = data.load_dataset("fashion_mnist", "train", download=False)
    test_set = data.load_dataset("fashion_mnist", "test", download=False)
    parts = partition.iid(train_set.y.numpy(), NUM_CLIENTS, seed=0)
    if quick:
        parts = [p[:64] for p in parts]
        test_set = test_set.subset(range(1000))
    return [train_set.subset(p) for p in parts], test_set


def new_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.make_model(CPU.arch, **CPU.arch_kwargs)  # every experiment's cpu-scale classifier


# ------------------------------------------------------------------ (A) plain PyTorch FedAvg, written here


def plain_fedavg(model, clients, rounds: int, seed: int):
    """FedAvg as a textbook writes it: per client a fresh SGD, shuffled batches of 32, then a weighted mean."""
    sizes = [len(c) for c in clients]
    total = float(sum(sizes))
    for t in range(1, rounds + 1):
        global_state = {k: v.clone() for k, v in model.state_dict().items()}
        avg = {k: torch.zeros_like(v) for k, v in global_state.items()}
        for c, client in enumerate(clients):
            model.load_state_dict(global_state)
            opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
            g = torch.Generator().manual_seed(seed * 1_000_003 + t * 1_009 + c)
            perm = torch.randperm(len(client), generator=g)
            model.train()
            for start in range(0, len(client), BATCH):
                idx = perm[start : start + BATCH]
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(client.x[idx]), client.y[idx]).backward()
                opt.step()
            for k, v in model.state_dict().items():
                avg[k] += v * (sizes[c] / total)
        model.load_state_dict(avg)
    return model


def engine(precision: str, runtime=None):
    def run(model, clients, rounds: int, seed: int):
        cfg = fl.FedConfig(num_rounds=rounds, batch_size=BATCH, lr=LR, momentum=MOMENTUM, seed=seed, precision=precision)
        if runtime is None:
            return fl.train(model, clients, cfg, progress=False).model
        with fl.client_runtime(runtime):
            return fl.train(model, clients, cfg, progress=False).model
    return run


def paths(runtime: ClientProcesses) -> dict:
    one_process = {"C fl.train bf16": engine("bf16")} if FAST == "bf16" else {}
    return {"A plain fp32": plain_fedavg, "B fl.train fp32": engine("fp32"), **one_process,
            f"D {FAST} {runtime.workers} procs": engine(FAST, runtime)}


# ------------------------------------------------------------------ measurements


def matmul_gflops(n: int, dtype: torch.dtype, reps: int) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main(argv=None) -> None:
    args = parse_args(argv)
    threads = set_threads(args.threads)
    with ClientProcesses(workers=threads, threads=1) as runtime:
        measure(args, threads, runtime)


def measure(args, threads: int, runtime: ClientProcesses) -> None:
    repeats = args.repeats or (2 if args.quick else 3)
    PATHS = paths(runtime)
    clients, test_set = load(args.quick)
    n_images = sum(len(c) for c in clients)
    info = numerics()
    print(f"# FedAvg throughput: {NUM_CLIENTS} IID clients x {len(clients[0])} Fashion-MNIST images, batch {BATCH}, "
          f"SGD lr {LR} momentum {MOMENTUM}, {CPU.arch} {CPU.arch_kwargs} ({models.count_parameters(new_model(0))} parameters), "
          f"{args.rounds} round(s) per repeat, {repeats} repeats {' '.join(name[0] for name in PATHS)} alternating{' (QUICK)' if args.quick else ''}")
    print(f"# cpu: {info['cpu']}; capability {info['cpu_capability']}; torch {info['torch']}; threads {threads}")

    mm_n, mm_reps = (512, 3) if args.quick else (2048, 5)
    dtypes = (torch.float32, torch.bfloat16) if FAST == "bf16" else (torch.float32,)
    peak = {dt: matmul_gflops(mm_n, dt, mm_reps) for dt in dtypes}
    print(f"# matmul peak (torch.mm {mm_n}x{mm_n}, best of {mm_reps}): "
          + ", ".join(f"{str(dt).removeprefix('torch.')} {gflops:.1f} GFLOP/s" for dt, gflops in peak.items()))
    if FAST != "bf16":
        print("# bf16 is emulated on this CPU (no AVX512-BF16 or AMX): path C and the bf16 accuracy are skipped, "
              "D runs in fp32")

    flops_per_image = fl.flops_per_sample(new_model(0), clients[0], BATCH, torch.device("cpu"))
    warm = [c.subset(range(2 * BATCH)) for c in clients[:2]]  # oneDNN builds its kernels on first use
    for fn in PATHS.values():
        fn(new_model(0), warm, 1, 0)

    times = {name: [] for name in PATHS}
    final = {}
    for _ in range(repeats):
        for name, fn in PATHS.items():
            seconds, final[name] = timed(fn, new_model(0), clients, args.rounds, 0)
            times[name].append(seconds)

    print()
    print(f"{'path':<18}{'median s':>10}{'img/s':>10}{'GFLOP/s':>10}{'% fp32 mm':>11}{'test acc':>10}   times (s)")
    for name in PATHS:
        med = statistics.median(times[name])
        ips = args.rounds * n_images / med
        gflops = ips * flops_per_image / 1e9
        acc = metrics.accuracy(final[name], test_set)
        print(f"{name:<18}{med:>10.2f}{ips:>10.0f}{gflops:>10.2f}{100 * gflops / peak[torch.float32]:>10.1f}%"
              f"{acc:>10.4f}   {' '.join(f'{s:.2f}' for s in times[name])}")
    print(f"# GFLOP/s: {flops_per_image / 1e6:.2f} MFLOP per image (fl.flops_per_sample, forward + backward) x img/s")

    fastest = [name for name in PATHS if name.startswith("D ")][0]
    start = time.perf_counter()
    metrics.accuracy(final[fastest], test_set)
    slow = time.perf_counter() - start
    start = time.perf_counter()
    metrics.fast_accuracy(final[fastest], test_set, precision=FAST)
    fast = time.perf_counter() - start
    print(f"# test-set evaluation ({len(test_set)} images): metrics.accuracy {slow:.2f} s, "
          f"metrics.fast_accuracy(precision='{FAST}') {fast:.2f} s")
    plain = statistics.median(times["A plain fp32"])
    if FAST != "bf16":
        print(f"fedavg_round_speedup_vs_plain_fp32: {plain / statistics.median(times[fastest]):.2f}")
        return

    # accuracy over seeds: seed 0 comes from the timed runs, the others are trained here
    accs = {"fp32": [metrics.accuracy(final["B fl.train fp32"], test_set)],
            "bf16": [metrics.accuracy(final["C fl.train bf16"], test_set)]}
    for seed in range(1, args.seeds):
        for precision in accs:
            accs[precision].append(metrics.accuracy(engine(precision)(new_model(seed), clients, args.rounds, seed),
                                                    test_set))
    mean = {p: float(np.mean(a)) for p, a in accs.items()}
    std = {p: float(np.std(a, ddof=1)) if len(a) > 1 else float("nan") for p, a in accs.items()}
    diff = mean["bf16"] - mean["fp32"]
    within = abs(diff) <= 2 * std["fp32"] if len(accs["fp32"]) > 1 else None
    print(f"\naccuracy over {len(accs['fp32'])} seeds after {args.rounds} round(s):")
    for p in accs:
        print(f"  {p}: mean {mean[p]:.4f} std {std[p]:.4f}   " + " ".join(f"{a:.4f}" for a in accs[p]))
    verdict = {True: "yes", False: "NO", None: "n/a (one seed)"}[within]
    print(f"  bf16 - fp32 = {diff:+.4f}; within the fp32 seed spread (|diff| <= 2 std): {verdict}")

    print(f"# one process (C) against A: {plain / statistics.median(times['C fl.train bf16']):.2f}")
    print(f"fedavg_round_speedup_vs_plain_fp32: {plain / statistics.median(times[fastest]):.2f}")


if __name__ == "__main__":
    main()
