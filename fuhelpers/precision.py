"""Numerical precision and memory format of a training or evaluation loop, decided in one place.

``"fp32"`` is the reference: every exactness test, every committed chapter output and the default of
:class:`fuhelpers.fl.FedConfig`. With it, :class:`Precision` changes nothing: no autocast, no memory-format
conversion, ``loss.backward(); opt.step()`` exactly as a plain loop writes it.

``"bf16"`` is the fast path. The master weights, the optimizer state and the averaging stay in fp32;
``torch.autocast`` runs the convolutions and matrix products of the forward pass (and hence their
backward) in bfloat16, and 4-D inputs and the model use the channels-last memory format, which lets
oneDNN (CPU) and cuDNN (GPU) run their fastest convolution kernels. bfloat16 has fp32's exponent range,
so it needs no loss scaling. ``"fp16"`` (CUDA only) adds a :class:`torch.amp.GradScaler`.

Loops use it like this (``fuhelpers.fl.local_train`` does)::

    prec = Precision(config.precision, device)
    with prec.memory_format(model):           # channels-last inside, original strides restored after
        opt = prec.sgd(model.parameters(), lr, momentum)   # fused on the fast paths
        for xb, yb in batches:
            with prec.autocast():
                loss = F.cross_entropy(model(prec.inputs(xb)), yb)
            prec.step(loss, opt)              # loss.backward(); opt.step() (scaled for fp16)

Which settings a device gets is the pure function :func:`autocast_settings`, so that the CUDA choices
are unit-tested on a machine without a GPU.

bf16 is fast only where the hardware computes it: a CPU with AVX512-BF16 or AMX, a GPU of compute
capability 8.0 or newer. Elsewhere it is emulated and slow (a 2-core AVX2 EPYC: a training step of the
``cpu`` scale's CNN 8x slower than fp32, a bf16 matrix product 0.3 GFLOP/s against fp32's 72), so the
experiment runner asks :func:`effective_precision` which arithmetic to use (:meth:`Precision` itself
always does what it is told).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["PRECISIONS", "AutocastSettings", "Precision", "autocast_settings", "check_precision",
           "effective_precision", "native_bf16"]

PRECISIONS = ("fp32", "bf16", "fp16")
"""Accepted values of ``precision``."""


def check_precision(precision: str) -> str:
    """Return ``precision`` when it is one of :data:`PRECISIONS`, else raise ``ValueError``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


_NATIVE_BF16_CPU = ("avx512_bf16", "amx_bf16", "bf16")   # x86's AVX512-BF16 and AMX, ARM's BF16 extension


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 in hardware rather than emulating it.

    A CPU: one of :data:`_NATIVE_BF16_CPU` in ``torch.cpu.get_capabilities()`` (without that function,
    older torch, False). A CUDA device: compute capability 8.0 or newer, as torch reports it for that
    device. Anything else: False.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
        return any(bool(caps.get(flag)) for flag in _NATIVE_BF16_CPU)
    return False


def effective_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """The arithmetic to run ``precision`` with on ``device``: ``precision``, except emulated bf16 -> ``"fp32"``.

    bf16 is a fast path, not a result: where the device only emulates it (:func:`native_bf16`), fp32
    is several times faster and as accurate, so a run asked for ``"bf16"`` there uses fp32.
    """
    check_precision(precision)
    return "fp32" if precision == "bf16" and not native_bf16(device) else precision


@dataclass(frozen=True)
class AutocastSettings:
    """What a loop does for one (device, precision).

    Attributes
    ----------
    device_type : str
        ``"cpu"`` or ``"cuda"`` (the ``device_type`` of ``torch.autocast``).
    dtype : torch.dtype or None
        Autocast dtype; ``None``: no autocast (fp32).
    use_scaler : bool
        Scale the loss with a ``GradScaler`` (fp16 only).
    memory_format : torch.memory_format or None
        Format for the model and 4-D inputs; ``None``: leave them as they are.
    """

    device_type: str
    dtype: torch.dtype | None
    use_scaler: bool
    memory_format: torch.memory_format | None


def autocast_settings(device: torch.device | str, precision: str) -> AutocastSettings:
    """The autocast dtype, loss scaling and memory format for ``precision`` on ``device`` (a pure function).

    ======== ======================================= ==========================================
    precision CPU                                    CUDA
    ======== ======================================= ==========================================
    fp32     nothing changes                         nothing changes
    bf16     autocast bfloat16, channels-last        autocast bfloat16, channels-last
    fp16     ``ValueError`` (slow on CPUs; use bf16) autocast float16, GradScaler, channels-last
    ======== ======================================= ==========================================

    Other device types accept only ``"fp32"``.
    """
    device_type = torch.device(device).type
    check_precision(precision)
    if precision == "fp32":
        return AutocastSettings(device_type, None, False, None)
    if device_type == "cpu":
        if precision == "fp16":
            raise ValueError("precision='fp16' is for CUDA; on a CPU use 'bf16' (same speed-up, no loss scaling)")
        return AutocastSettings("cpu", torch.bfloat16, False, torch.channels_last)
    if device_type == "cuda":
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return AutocastSettings("cuda", dtype, precision == "fp16", torch.channels_last)
    raise ValueError(f"precision={precision!r} is supported on 'cpu' and 'cuda', not on {device_type!r}; use 'fp32'")


class Precision:
    """The helpers a loop needs for ``precision`` on ``device`` (see the module docstring).

    For ``"fp32"`` every method is the identity (``inputs``), a ``nullcontext`` (``autocast``,
    ``memory_format``) or the plain ``loss.backward(); optimizer.step()`` (``step``), so a loop written
    with it computes exactly what the same loop without it computes.
    """

    def __init__(self, precision: str = "fp32", device: torch.device | str = "cpu") -> None:
        self.precision = precision
        self.device = torch.device(device)
        self.settings = autocast_settings(self.device, precision)
        self.scaler = torch.amp.GradScaler(self.settings.device_type) if self.settings.use_scaler else None

    @property
    def is_reference(self) -> bool:
        """True for fp32, the path that changes nothing."""
        return self.settings.dtype is None

    def autocast(self):
        """``torch.autocast`` for the forward pass and loss; a ``nullcontext`` for fp32."""
        s = self.settings
        return nullcontext() if s.dtype is None else torch.autocast(s.device_type, dtype=s.dtype)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the loop's memory format when it is a 4-D batch of images; else ``x`` itself."""
        fmt = self.settings.memory_format
        return x if fmt is None or x.dim() != 4 else x.contiguous(memory_format=fmt)

    def memory_format(self, model: nn.Module):
        """Context manager: ``model`` in the loop's memory format inside, its original strides after.

        Only 4-D parameters and buffers are converted (``nn.Module.to(memory_format=...)``); on exit
        each is brought back to the strides it had, so ``state_dict`` consumers and later fp32
        evaluation see the layout (and so the kernels and the rounding) they saw before. Values are
        not touched by either conversion. Do not enter it inside ``torch.inference_mode()``: the
        converted parameters would become inference tensors.
        """
        if self.settings.memory_format is None:
            return nullcontext(model)
        return _converted(model, self.settings.memory_format)

    def sgd(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> torch.optim.SGD:
        """``torch.optim.SGD`` for the loop: the plain one for fp32, the fused kernel on the fast paths.

        The fused kernel does one pass over each parameter instead of several elementwise calls (about 8 %
        of a bf16 step of the cpu-scale CNN on 2 cores); its updates are the same operations in the same order.
        """
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               fused=True if not self.is_reference else None)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """``loss.backward(); optimizer.step()``, through the GradScaler for fp16."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()


def _four_d(model: nn.Module) -> dict[str, torch.Tensor]:
    named = (*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False))
    return {name: t for name, t in named if t.dim() == 4}


@contextmanager
def _converted(model: nn.Module, memory_format: torch.memory_format):
    before = {name: t.stride() for name, t in _four_d(model).items()}
    model.to(memory_format=memory_format)
    try:
        yield model
    finally:
        for name, t in _four_d(model).items():  # looked up again: conversion may replace the objects
            stride = before[name]
            if t.stride() != stride:  # the exact strides, also those of size-1 dimensions
                t.data = torch.empty_strided(t.shape, stride, dtype=t.dtype, device=t.device).copy_(t.data)
