"""Small image classifiers used in the book, and helpers to inspect their parameters.

Models
------
``MnistCNN``
    Two conv/ReLU/max-pool blocks and two fully connected layers, the usual
    MNIST/FMNIST network of federated (un)learning papers; also fits 32x32
    (CIFAR) and 64x64 (PACS) inputs.
``MLP``
    Fully connected network on flattened inputs, e.g. 8x8 scikit-learn digits.
``ResNet18``
    CIFAR-style ResNet-18 (He et al., 2016) with a choice of normalisation.

All models are built from ``nn.Module`` layers only (``nn.ReLU``, ``nn.Flatten``,
one module per use), so that BackPACK can extend them: ``MnistCNN`` and ``MLP``
are ``nn.Sequential`` and work with ``backpack.extend`` directly; ``ResNet18``
needs ``backpack.extend(model, use_converter=True)`` for its residual sums.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "MLP",
    "MODELS",
    "MnistCNN",
    "ResNet18",
    "count_parameters",
    "first_layer",
    "flatten_params",
    "last_layer",
    "layer_names",
    "make_model",
    "model_for",
    "unflatten_params_",
]


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


# ---------------------------------------------------------------- MnistCNN


def mnist_cnn_output_size(image_size: int, kernel_size: int = 5, padding: int = 0) -> int:
    """Side length after MnistCNN's two conv + 2x2 max-pool blocks (< 1: the image is too small)."""
    size = image_size
    for _ in range(2):
        size = (size + 2 * padding - kernel_size + 1) // 2
        if size < 1:
            return size
    return size


class MnistCNN(nn.Sequential):
    """Two-block CNN: (conv -> ReLU -> 2x2 max-pool) x 2, then fc -> ReLU -> fc.

    The standard small CNN for MNIST/FMNIST in federated learning (McMahan
    et al., 2017, with 5x5 kernels and 32/64 channels) and the TIS paper's
    MNIST/FMNIST model. Convolutions are unpadded by default, so the flattened
    size is computed from ``image_size``; 28 (MNIST), 32 (CIFAR) and 64 (PACS)
    all work, and ``padding=kernel_size // 2`` makes 8x8 digits work too. There is no dropout: it would make the forward pass random, which
    complicates exact reproducibility and the curvature computations (BackPACK)
    used by the unlearning methods.

    Parameters
    ----------
    in_channels : int
        Input channels (1 for grey-scale, 3 for colour).
    num_classes : int
        Number of output logits.
    image_size : int
        Height (= width) of the square input images.
    width : tuple of int
        Output channels of the two convolutions.
    hidden : int
        Units of the hidden fully connected layer.
    kernel_size : int
        Kernel size of both convolutions (5 as in McMahan et al.; 3 is the
        other common choice).
    padding : int
        Zero padding of both convolutions (0 as in McMahan et al.).

    Notes
    -----
    Layer names: ``conv1, relu1, pool1, conv2, relu2, pool2, flatten, fc1,
    relu3, fc2``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        width: tuple[int, int] = (32, 64),
        hidden: int = 128,
        kernel_size: int = 5,
        padding: int = 0,
    ) -> None:
        _check_positive(in_channels=in_channels, num_classes=num_classes, hidden=hidden,
                        kernel_size=kernel_size)
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        if len(width) != 2 or min(width) < 1:
            raise ValueError(f"width must be two positive channel counts, got {width}")
        size_after_block2 = mnist_cnn_output_size(image_size, kernel_size, padding)
        if size_after_block2 < 1:
            raise ValueError(f"image_size={image_size} is too small for kernel_size={kernel_size} "
                             f"and padding={padding}; try padding={kernel_size // 2}")
        c1, c2 = width
        flat = c2 * size_after_block2**2
        super().__init__(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, c1, kernel_size, padding=padding)),  # (N, c1, S+2p-k+1, ...)
            ("relu1", nn.ReLU()),
            ("pool1", nn.MaxPool2d(2)),                             # (N, c1, s1, s1)
            ("conv2", nn.Conv2d(c1, c2, kernel_size, padding=padding)),             # (N, c2, s1+2p-k+1, ...)
            ("relu2", nn.ReLU()),
            ("pool2", nn.MaxPool2d(2)),                             # (N, c2, s2, s2)
            ("flatten", nn.Flatten()),                              # (N, c2 * s2 * s2)
            ("fc1", nn.Linear(flat, hidden)),                       # (N, hidden)
            ("relu3", nn.ReLU()),
            ("fc2", nn.Linear(hidden, num_classes)),                # (N, num_classes)
        ]))


# ---------------------------------------------------------------- MLP


class MLP(nn.Sequential):
    """Fully connected ReLU network that flattens its input first.

    Parameters
    ----------
    in_features : int
        Number of input features after flattening (64 for 8x8 digits).
    hidden : sequence of int
        Widths of the hidden layers; empty gives multinomial logistic regression.
    num_classes : int
        Number of output logits.

    Notes
    -----
    Layer names: ``flatten, fc1, relu1, ..., fc{len(hidden) + 1}``.
    """

    def __init__(
        self, in_features: int = 64, hidden: Sequence[int] = (128,), num_classes: int = 10
    ) -> None:
        _check_positive(in_features=in_features, num_classes=num_classes)
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden widths must be >= 1, got {tuple(hidden)}")
        sizes = [in_features, *hidden]
        layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]  # (N, in_features)
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            layers += [(f"fc{i}", nn.Linear(n_in, n_out)), (f"relu{i}", nn.ReLU())]  # (N, n_out)
        layers.append((f"fc{len(sizes)}", nn.Linear(sizes[-1], num_classes)))  # (N, num_classes)
        super().__init__(OrderedDict(layers))


# ---------------------------------------------------------------- ResNet18

NORMS = ("batch", "group", "none")


def _norm_layer(norm: str, channels: int) -> nn.Module:
    """BatchNorm, GroupNorm (gcd(32, C) groups, Wu & He 2018) or nothing."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    return nn.Identity()


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int, norm: str) -> nn.Conv2d:
    """Convolution with "same" padding; it has a bias only when no normalisation follows."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                     padding=kernel_size // 2, bias=norm == "none")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions plus a shortcut: ``relu(norm(conv(relu(norm(conv(x))))) + shortcut(x))``.

    The shortcut is ``nn.Identity`` when shapes match and a strided 1x1
    convolution (plus normalisation) otherwise. The forward pass has no
    data-dependent control flow, so ``torch.fx`` (and hence BackPACK's
    converter) can trace it.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, out_channels, 3, stride, norm)
        self.norm1 = _norm_layer(norm, out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv(out_channels, out_channels, 3, 1, norm)
        self.norm2 = _norm_layer(norm, out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                _conv(in_channels, out_channels, 1, stride, norm), _norm_layer(norm, out_channels)
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        # x: (N, C_in, H, W); s = stride
        out = self.relu1(self.norm1(self.conv1(x)))  # (N, C_out, H/s, W/s)
        out = self.norm2(self.conv2(out))  # (N, C_out, H/s, W/s)
        return self.relu2(out + self.shortcut(x))  # (N, C_out, H/s, W/s)


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18 (He et al., 2016).

    A 3x3 stride-1 stem without max-pooling, four stages of two
    :class:`BasicBlock` each with ``width * (1, 2, 4, 8)`` channels and strides
    1/2/2/2, global average pooling and a linear classifier. With the defaults
    (``width=64``, ``norm="batch"``, 10 classes) it has 11,173,962 parameters,
    like the widely used CIFAR implementation of kuangliu/pytorch-cifar.

    Parameters
    ----------
    num_classes : int
        Number of output logits.
    in_channels : int
        Input channels.
    norm : {"batch", "group", "none"}
        Normalisation after every convolution. ``"group"`` uses GroupNorm with
        gcd(32, C) groups (federated learning often prefers it to BatchNorm,
        whose running statistics differ across non-IID clients); ``"none"``
        uses ``nn.Identity`` and gives the convolutions biases.
    width : int
        Channels of the first stage; shrink it (e.g. 8) for fast tests.

    Notes
    -----
    BackPACK: extend with ``backpack.extend(model, use_converter=True)``. Its
    second-order extensions (e.g. ``DiagGGNExact``) support ``norm="batch"``
    only in ``eval()`` mode and do not support ``norm="group"`` at all
    (BackPACK 1.7 has no GroupNorm extension); ``norm="none"`` always works.
    """

    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, norm: str = "batch", width: int = 64
    ) -> None:
        super().__init__()
        _check_positive(num_classes=num_classes, in_channels=in_channels, width=width)
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
        channels = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = _conv(in_channels, width, 3, 1, norm)
        self.norm1 = _norm_layer(norm, width)
        self.relu = nn.ReLU()
        self.layer1 = self._stage(width, channels[0], 1, norm)
        self.layer2 = self._stage(channels[0], channels[1], 2, norm)
        self.layer3 = self._stage(channels[1], channels[2], 2, norm)
        self.layer4 = self._stage(channels[2], channels[3], 2, norm)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels[3], num_classes)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, stride: int, norm: str) -> nn.Sequential:
        return nn.Sequential(
            BasicBlock(in_channels, out_channels, stride, norm),
            BasicBlock(out_channels, out_channels, 1, norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        # x: (N, C_in, H, W); w = width; shapes below for H = W = 32
        out = self.relu(self.norm1(self.conv1(x)))  # (N, w, 32, 32)
        out = self.layer1(out)  # (N, w, 32, 32)
        out = self.layer2(out)  # (N, 2w, 16, 16)
        out = self.layer3(out)  # (N, 4w, 8, 8)
        out = self.layer4(out)  # (N, 8w, 4, 4)
        out = self.flatten(self.pool(out))  # (N, 8w)
        return self.fc(out)  # (N, num_classes)


# ---------------------------------------------------------------- factories

MODELS: dict[str, type[nn.Module]] = {"mnist_cnn": MnistCNN, "mlp": MLP, "resnet18": ResNet18}


def make_model(name: str, **kwargs) -> nn.Module:
    """Build a model by name.

    Parameters
    ----------
    name : {"mnist_cnn", "mlp", "resnet18"}
        Model name.
    **kwargs
        Passed to the model's constructor.

    Returns
    -------
    torch.nn.Module
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


def _input_spec(data) -> tuple[tuple[int, ...], int]:
    """(shape of one sample, number of classes) from a data set or a tuple."""
    if isinstance(data, tuple):
        if len(data) != 3:
            raise ValueError(f"expected (in_channels, image_size, num_classes), got {data}")
        in_channels, image_size, num_classes = data
        return (in_channels, image_size, image_size), num_classes
    if hasattr(data, "x") and hasattr(data, "num_classes"):
        return tuple(data.x.shape[1:]), int(data.num_classes)
    raise ValueError(
        "data must be an ArrayDataset-like object (with .x and .num_classes) "
        f"or a tuple (in_channels, image_size, num_classes), got {type(data).__name__}"
    )


def model_for(data, name: str = "mnist_cnn", **kwargs) -> nn.Module:
    """Build the named model with input and output sizes that fit a data set.

    Parameters
    ----------
    data : ArrayDataset or tuple
        A data set with ``.x`` of shape ``(N, C, H, W)`` (or ``(N, F)``) and
        ``.num_classes``, or a tuple ``(in_channels, image_size, num_classes)``.
    name : {"mnist_cnn", "mlp", "resnet18"}
        Model name.
    **kwargs
        Further constructor arguments (e.g. ``width``, ``norm``). For
        ``"mnist_cnn"`` on images too small for unpadded convolutions (8x8
        digits), ``padding`` defaults to ``kernel_size // 2``.

    Returns
    -------
    torch.nn.Module
    """
    sample_shape, num_classes = _input_spec(data)
    if name == "mlp":
        return MLP(in_features=math.prod(sample_shape), num_classes=num_classes, **kwargs)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    if len(sample_shape) != 3 or sample_shape[1] != sample_shape[2]:
        raise ValueError(f"{name} needs square images (C, S, S), got sample shape {sample_shape}")
    in_channels, image_size, _ = sample_shape
    if name == "mnist_cnn":
        kernel = kwargs.get("kernel_size", 5)
        if "padding" not in kwargs and mnist_cnn_output_size(image_size, kernel) < 1:
            kwargs["padding"] = kernel // 2  # small images (8x8 digits): "same" padding
        return MnistCNN(in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                        **kwargs)
    return ResNet18(num_classes=num_classes, in_channels=in_channels, **kwargs)


# ---------------------------------------------------------------- parameters


def count_parameters(model: nn.Module) -> int:
    """Total number of scalar parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def layer_names(model: nn.Module) -> list[str]:
    """Names of the modules that hold parameters themselves, in registration order.

    For the models in this file registration order is forward order, so the
    list starts at the input layer and ends at the classifier. Normalisation
    layers with affine parameters are included.
    """
    return [
        name for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    ]


def _weight_layers(model: nn.Module) -> list[str]:
    modules = dict(model.named_modules())
    names = [n for n in layer_names(model) if isinstance(modules[n], (nn.Conv2d, nn.Linear))]
    if not names:
        raise ValueError(f"{type(model).__name__} has no Conv2d or Linear layer")
    return names


def first_layer(model: nn.Module) -> str:
    """Module name of the first convolution or linear layer (e.g. ``"conv1"``)."""
    return _weight_layers(model)[0]


def last_layer(model: nn.Module) -> str:
    """Module name of the last convolution or linear layer (e.g. ``"fc"``)."""
    return _weight_layers(model)[-1]


def flatten_params(model: nn.Module) -> Tensor:
    """All parameters concatenated into one detached 1-D tensor.

    The order is ``model.parameters()``; buffers (e.g. BatchNorm running
    statistics) are not included.
    """
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def unflatten_params_(model: nn.Module, vec: Tensor) -> nn.Module:
    """Copy a flat vector (as from :func:`flatten_params`) into the parameters, in place.

    Parameters
    ----------
    model : torch.nn.Module
        Model whose parameters are overwritten.
    vec : torch.Tensor, shape (count_parameters(model),)
        Flat parameter vector; it is cast to each parameter's dtype and device.

    Returns
    -------
    torch.nn.Module
        ``model``, for chaining.
    """
    expected = count_parameters(model)
    if vec.ndim != 1 or vec.numel() != expected:
        raise ValueError(f"expected a 1-D vector of length {expected}, got shape {tuple(vec.shape)}")
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(vec[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
    return model
