"""Precision of local training (fuhelpers.precision, FedConfig.precision) and the opt-in fast evaluation.

fp32 is the reference and must stay exactly the plain PyTorch loop; bf16 is the fast path and must train, stay
close to fp32 and leave the model's memory format as it found it.
"""
import dataclasses
import inspect

import pytest
import torch

from fuhelpers import fl, metrics, models
from fuhelpers.data import ArrayDataset
from fuhelpers.device import describe_environment
from fuhelpers.fl import FedConfig, derive_seed, fedavg, local_train, state_copy, train
from fuhelpers.precision import (PRECISIONS, AutocastSettings, Precision, autocast_settings, effective_precision,
                                 native_bf16)

CPU = torch.device("cpu")
U_BF16 = 2.0**-8  # unit roundoff of bfloat16: 8 significant bits (7 stored + 1 implicit)


def images(n=48, num_classes=3, side=12, seed=0):
    """Tiny image-shaped data (n, 1, side, side) with class-dependent means."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    centers = torch.randn(num_classes, 1, side, side, generator=g)
    x = centers[y] + 0.5 * torch.randn(n, 1, side, side, generator=g)
    return ArrayDataset(x=x.float(), y=y.long(), classes=[str(k) for k in range(num_classes)])


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return models.MnistCNN(num_classes=3, image_size=12, width=(4, 8), hidden=16, kernel_size=3)


def small_mlp(seed=0):
    torch.manual_seed(seed)
    return models.MLP(in_features=144, hidden=(8,), num_classes=3)


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def strides(model):
    return {n: t.stride() for n, t in (*model.named_parameters(), *model.named_buffers())}


def loss_of(model, data):
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(data.x), data.y).item()


# ------------------------------------------------------------------ fp32: exactly the plain loop


def plain_round(model, data, cfg, generator):
    """One client's local epoch(s) written by hand: randperm batches, fresh SGD, forward/CE/backward/step."""
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    model.train()
    for _ in range(cfg.local_epochs):
        perm = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data), cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(data.x[idx]), data.y[idx]).backward()
            opt.step()


@pytest.mark.parametrize("make_model", [small_cnn, small_mlp])
def test_fp32_fedavg_is_bit_identical_to_a_hand_written_loop(make_model):
    data = images(n=50)  # batch 8: a short last batch
    parts = [data.subset(range(0, 20)), data.subset(range(20, 50))]
    cfg = FedConfig(num_rounds=2, batch_size=8, lr=0.05, momentum=0.9, weight_decay=1e-3, seed=5)
    assert cfg.precision == "fp32"  # the default
    engine = train(make_model(), parts, cfg, progress=False).model

    ref = make_model()
    sizes = torch.tensor([len(p) for p in parts], dtype=torch.float64)
    for t in (1, 2):
        start = {k: v.clone() for k, v in ref.state_dict().items()}
        uploads = []
        for c, part in enumerate(parts):
            ref.load_state_dict(start)
            plain_round(ref, part, cfg, torch.Generator().manual_seed(derive_seed(cfg.seed, t, c)))
            uploads.append({k: v.clone() for k, v in ref.state_dict().items()})
        w = sizes / sizes.sum()  # sum_k (n_k / n) w^k, accumulated in float64
        ref.load_state_dict({k: sum(wk.item() * u[k].double() for wk, u in zip(w, uploads)).float()
                             for k in uploads[0]})
    for (name, a), b in zip(engine.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name
        assert a.stride() == b.stride(), name


def test_fp32_path_applies_no_autocast_and_no_memory_format():
    prec = Precision("fp32", CPU)
    assert prec.is_reference and prec.scaler is None
    x = torch.randn(2, 3, 4, 4)
    assert prec.inputs(x) is x
    model = small_cnn()
    with prec.memory_format(model):
        assert strides(model) == strides(small_cnn())
    with prec.autocast():
        assert not torch.is_autocast_enabled("cpu")


# ------------------------------------------------------------------ bf16: trains, close to fp32, engaged


def test_bf16_runs_the_forward_in_bfloat16_channels_last_with_fp32_master_weights():
    model, seen = small_cnn(), {}
    model.conv1.register_forward_hook(lambda m, inp, out: seen.update(
        dtype=out.dtype, channels_last=inp[0].is_contiguous(memory_format=torch.channels_last),
        weight_channels_last=m.weight.is_contiguous(memory_format=torch.channels_last) and m.weight.stride(1) == 1))
    cfg = FedConfig(batch_size=12, lr=0.05, local_steps=2, precision="bf16")
    local_train(model, images(), cfg, torch.Generator().manual_seed(0), CPU)
    assert seen == {"dtype": torch.bfloat16, "channels_last": True, "weight_channels_last": True}
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_training_decreases_the_loss():
    data, model = images(), small_cnn()
    before = loss_of(model, data)
    train(model, [data], FedConfig(num_rounds=2, local_epochs=4, batch_size=12, lr=0.05, precision="bf16"),
          progress=False)
    after = loss_of(model, data)
    assert after < 0.5 * before, (before, after)


def test_bf16_weights_stay_close_to_fp32_after_a_few_steps():
    """After s steps the bf16 weights differ from the fp32 ones by at most s bf16 roundings of the weights.

    Each step computes its update from operands rounded to bfloat16 (relative error <= u = 2^-8, accumulation
    in fp32). The update is a small fraction of the weights, so the error one step adds is well below one
    rounding of the weights themselves, u * ||w||; s steps add at most s * u * ||w||. (Measured here: about
    u/2 after 4 steps, 8x below the bound.) The difference must also be real: more than 2^-16 of the
    update, well above fp32 reordering noise (channels-last alone in fp32 gives about 2e-7), so a bf16 path
    that silently ran in fp32 fails.
    """
    data, steps = images(), 4
    w0 = flat(small_cnn())
    out = {}
    for precision in ("fp32", "bf16"):
        model = small_cnn()
        cfg = FedConfig(batch_size=12, lr=0.05, local_steps=steps, precision=precision)
        local_train(model, data, cfg, torch.Generator().manual_seed(0), CPU)
        out[precision] = flat(model)
    diff = (out["bf16"] - out["fp32"]).norm()
    assert diff <= steps * U_BF16 * out["fp32"].norm()
    assert diff > 2.0**-16 * (out["fp32"] - w0).norm()


def test_memory_format_is_restored_and_state_dicts_are_contiguous():
    data, model = images(), small_cnn()
    before = strides(model)
    res = train(model, [data.subset(range(24)), data.subset(range(24, 48))],
                FedConfig(num_rounds=2, batch_size=12, precision="bf16"), progress=False)
    assert strides(res.model) == before  # conv1's (4, 1, 3, 3) weight too: its size-1 stride is restored
    assert all(v.is_contiguous() for v in state_copy(res.model).values())
    # fp32 evaluation of the trained model equals that of a fresh model loaded from its state: no layout leaks
    fresh = small_cnn(seed=1)
    fresh.load_state_dict(res.model.state_dict())
    assert torch.equal(metrics.predict(res.model, data), metrics.predict(fresh, data))


def test_a_channels_last_model_comes_back_channels_last():
    model = small_cnn().to(memory_format=torch.channels_last)
    before = strides(model)
    local_train(model, images(), FedConfig(batch_size=12, local_steps=2, precision="bf16"),
                torch.Generator().manual_seed(0), CPU)
    assert strides(model) == before


def test_fedavg_and_state_copy_are_layout_blind():
    states = []
    for seed in (0, 1):
        model = small_cnn(seed)
        states.append(state_copy(model))
    cl = [{k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v.clone() for k, v in s.items()}
          for s in states]
    copied = state_copy(small_cnn().to(memory_format=torch.channels_last))
    assert copied["conv2.weight"].is_contiguous(memory_format=torch.channels_last)  # clone keeps the layout
    a, b = fedavg(states, [3, 5]), fedavg(cl, [3, 5])
    for k in a:
        assert torch.equal(a[k], b[k]), k
    target = small_cnn(seed=2)
    target.load_state_dict(b)  # copies values into the existing (contiguous) parameters
    assert all(p.is_contiguous() for p in target.parameters())


def test_masked_training_keeps_frozen_entries_in_bf16():
    model = small_cnn()
    start = state_copy(model)
    mask = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) > 0.5
            for n, p in model.named_parameters()}
    local_train(model, images(), FedConfig(batch_size=12, local_steps=3, precision="bf16"),
                torch.Generator().manual_seed(0), CPU, mask)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach()[~mask[n]], start[n][~mask[n]]), n
        assert not torch.equal(p.detach(), start[n]), n


# ------------------------------------------------------------------ the device logic (pure; CUDA without a GPU)


@pytest.mark.parametrize("device, precision, expected", [
    ("cpu", "fp32", AutocastSettings("cpu", None, False, None)),
    ("cpu", "bf16", AutocastSettings("cpu", torch.bfloat16, False, torch.channels_last)),
    ("cuda", "fp32", AutocastSettings("cuda", None, False, None)),
    ("cuda", "bf16", AutocastSettings("cuda", torch.bfloat16, False, torch.channels_last)),
    ("cuda:1", "fp16", AutocastSettings("cuda", torch.float16, True, torch.channels_last)),
    (torch.device("cuda", 0), "bf16", AutocastSettings("cuda", torch.bfloat16, False, torch.channels_last)),
    ("mps", "fp32", AutocastSettings("mps", None, False, None)),
])
def test_autocast_settings(device, precision, expected):
    assert autocast_settings(device, precision) == expected


@pytest.mark.parametrize("device, precision, message", [
    ("cpu", "fp16", "for CUDA"), ("mps", "bf16", "not on 'mps'"), ("cpu", "fp64", "must be one of"),
    ("cuda", "bfloat16", "must be one of"),
])
def test_autocast_settings_rejects(device, precision, message):
    with pytest.raises(ValueError, match=message):
        autocast_settings(device, precision)


def test_fedconfig_checks_precision():
    assert PRECISIONS == ("fp32", "bf16", "fp16")
    with pytest.raises(ValueError, match="precision"):
        FedConfig(precision="half")


def test_local_train_moves_data_to_the_device_once():
    """The client's tensors go to the device before the loop: indexing happens there, not on the host."""
    calls = []

    class Spy(torch.Tensor):
        def to(self, *args, **kwargs):
            calls.append(args)
            return super().to(*args, **kwargs)

    data = images()
    spied = ArrayDataset(x=data.x.as_subclass(Spy), y=data.y, classes=data.classes)
    local_train(small_cnn(), spied, FedConfig(batch_size=12, local_steps=4), torch.Generator().manual_seed(0), CPU)
    assert len(calls) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: only the pure settings are tested")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_training_runs(precision):
    data, model = images(), small_cnn().cuda()
    before_strides, before = strides(model), loss_of(model, ArrayDataset(x=data.x.cuda(), y=data.y.cuda(),
                                                                         classes=data.classes))
    train(model, [data], FedConfig(num_rounds=4, batch_size=12, lr=0.05, precision=precision), progress=False)
    assert strides(model) == before_strides
    assert next(model.parameters()).dtype == torch.float32
    assert loss_of(model, ArrayDataset(x=data.x.cuda(), y=data.y.cuda(), classes=data.classes)) < 0.8 * before


# ------------------------------------------------------------------ no torch.compile option (honest guard)


def test_no_torch_compile_option_is_offered():
    """fuhelpers offers no torch.compile switch (see FedConfig's docstring: slower on CPU, zero conv gradients
    seen at one width). Whoever adds one must replace this test with a comparison of compiled and eager
    gradients on every model of fuhelpers.models.MODELS (small inputs), which then guards the option."""
    names = {f.name for f in dataclasses.fields(FedConfig)}
    names |= set(inspect.signature(fl.train).parameters) | set(inspect.signature(fl.local_train).parameters)
    names |= set(inspect.signature(metrics.fast_predict).parameters)
    assert not any("compile" in n for n in names), sorted(n for n in names if "compile" in n)
    assert not any("compile" in n.lower() for n in dir(fl) if not n.startswith("_")), "fl exposes a compile helper"


# ------------------------------------------------------------------ opt-in fast evaluation


def test_fast_accuracy_matches_accuracy_and_restores_the_model():
    data, model = images(n=90), small_cnn()
    train(model, [data], FedConfig(num_rounds=2, batch_size=12, lr=0.05), progress=False)
    model.train()
    before = strides(model)
    ref = metrics.accuracy(model, data)
    assert metrics.fast_accuracy(model, data, batch_size=64) == ref
    torch.testing.assert_close(metrics.fast_predict(model, data, batch_size=64), metrics.predict(model, data),
                               rtol=1e-5, atol=1e-5)
    bf = metrics.fast_predict(model, data, precision="bf16")
    assert bf.dtype == torch.float32 and bf.shape == (90, 3)
    torch.testing.assert_close(bf, metrics.predict(model, data), rtol=8 * U_BF16, atol=8 * U_BF16)
    assert abs(metrics.fast_accuracy(model, data, precision="bf16") - ref) <= 2 / len(data)
    assert model.training and strides(model) == before
    assert not any(p.is_inference() for p in model.parameters())  # still trainable afterwards
    train(model, [data], FedConfig(num_rounds=1, batch_size=12), progress=False)
    assert metrics.fast_predict(model, data.subset([])).shape == (0, 0)


def test_fast_path_sgd_is_fused_and_updates_like_hand_written_momentum_sgd():
    g = torch.Generator().manual_seed(0)
    w0, grads = torch.randn(5, 3, generator=g), [torch.randn(5, 3, generator=g) for _ in range(3)]
    lr, mom, wd = 0.1, 0.9, 0.01
    w, buf = w0.clone(), None
    for grad in grads:  # torch.optim.SGD's rule, dampening 0: d = g + wd w; b = mom b + d; w -= lr b
        d = grad + wd * w
        buf = d if buf is None else mom * buf + d
        w = w - lr * buf
    for precision, fused in [("fp32", None), ("bf16", True)]:
        p = torch.nn.Parameter(w0.clone())
        opt = Precision(precision, "cpu").sgd([p], lr, mom, wd)
        assert opt.defaults["fused"] is fused
        for grad in grads:
            p.grad = grad.clone()
            opt.step()
        torch.testing.assert_close(p.detach(), w, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- where bf16 is fast
def _cpu_flags() -> set[str] | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), None)
    except OSError:
        return None


def test_native_bf16_agrees_with_the_cpu_flags():
    flags = _cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo flags (not Linux on x86)")
    assert native_bf16("cpu") == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_the_environment_a_chapter_prints_says_whether_bf16_is_native():
    flags = _cpu_flags()
    if flags is None or torch.cuda.is_available():
        pytest.skip("no /proc/cpuinfo flags (not Linux on x86), or a GPU decides")
    native = bool({"avx512_bf16", "amx_bf16"} & flags)
    assert describe_environment()["bf16"].startswith("native" if native else "emulated")


@pytest.mark.parametrize("flags, native", [({"avx2": True, "avx512_f": True}, False), ({"avx512_bf16": True}, True),
                                           ({"amx_bf16": True, "amx_tile": True}, True), ({"bf16": True}, True),
                                           ({"avx512_bf16": False, "sve_max_length": 256}, False)])
def test_effective_precision_runs_emulated_bf16_as_fp32(monkeypatch, flags, native):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"architecture": "test", **flags})
    assert native_bf16("cpu") is native
    assert effective_precision("bf16", "cpu") == ("bf16" if native else "fp32")
    assert effective_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="precision"):
        effective_precision("half", "cpu")


@pytest.mark.parametrize("capability, native", [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_native_bf16_on_cuda_reads_the_devices_compute_capability(monkeypatch, capability, native):
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: asked.append(device) or capability)
    assert native_bf16("cuda:1") is native and asked == [torch.device("cuda", 1)]
    assert effective_precision("bf16", "cuda") == ("bf16" if native else "fp32")
    assert effective_precision("fp16", "cuda") == "fp16"


def test_native_bf16_without_cuda_or_on_other_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not native_bf16("cuda") and not native_bf16("mps")
