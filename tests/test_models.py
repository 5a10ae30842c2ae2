"""Tests for fuhelpers.models: shapes, parameter counts, helpers and BackPACK compatibility."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fuhelpers.models import (
    MLP,
    MnistCNN,
    ResNet18,
    count_parameters,
    first_layer,
    flatten_params,
    last_layer,
    layer_names,
    make_model,
    model_for,
    unflatten_params_,
)

SMALL_MODELS = {
    "mnist_cnn": (lambda: MnistCNN(), (2, 1, 28, 28)),
    "mlp": (lambda: MLP(hidden=(32, 16)), (2, 1, 8, 8)),
    "resnet8": (lambda: ResNet18(width=8), (2, 3, 16, 16)),
}


@pytest.fixture(scope="module")
def full_resnet18():
    torch.manual_seed(0)
    return ResNet18()


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("image_size", [28, 32, 64])
@pytest.mark.parametrize("in_channels", [1, 2, 3])
def test_mnist_cnn_output_shape(image_size, in_channels):
    model = MnistCNN(in_channels=in_channels, num_classes=7, image_size=image_size, width=(4, 8), hidden=16)
    assert model(torch.zeros(3, in_channels, image_size, image_size)).shape == (3, 7)


def test_mnist_cnn_rejects_too_small_images():
    with pytest.raises(ValueError, match="image_size=8 is too small"):
        MnistCNN(image_size=8)


@pytest.mark.parametrize("hidden, num_linear", [((), 1), ((128,), 2), ((32, 16), 3)])
def test_mlp_flattens_digits(hidden, num_linear):
    model = MLP(in_features=64, hidden=hidden, num_classes=10)
    assert model(torch.zeros(5, 1, 8, 8)).shape == (5, 10)
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == num_linear


def test_resnet18_has_the_standard_cifar_parameter_count(full_resnet18):
    assert count_parameters(full_resnet18) == 11_173_962
    assert full_resnet18(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
@pytest.mark.parametrize("image_size", [32, 64])
def test_small_resnet_forward_backward(norm, image_size):
    torch.manual_seed(0)
    model = ResNet18(num_classes=7, in_channels=1, norm=norm, width=8)
    logits = model(torch.randn(4, 1, image_size, image_size))
    assert logits.shape == (4, 7)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.fc.weight.grad.abs().sum() > 0
    assert (model.conv1.bias is not None) == (norm == "none"), "convs have biases only without norm"


def test_resnet_norm_layers_follow_the_norm_argument():
    kinds = {
        norm: {type(m) for m in ResNet18(width=8, norm=norm).modules()} for norm in ["batch", "group", "none"]
    }
    assert nn.BatchNorm2d in kinds["batch"] and nn.GroupNorm not in kinds["batch"]
    assert nn.GroupNorm in kinds["group"] and nn.BatchNorm2d not in kinds["group"]
    assert not {nn.BatchNorm2d, nn.GroupNorm} & kinds["none"]


def test_resnet_rejects_unknown_norm():
    with pytest.raises(ValueError, match="unknown norm 'layer'; choose one of batch, group, none"):
        ResNet18(norm="layer")


# ---------------------------------------------------------------- seeding and flat parameters


@pytest.mark.parametrize("name", list(SMALL_MODELS))
def test_init_is_determined_by_torch_manual_seed(name):
    build, _ = SMALL_MODELS[name]
    torch.manual_seed(3)
    first = flatten_params(build())
    torch.manual_seed(3)
    again = flatten_params(build())
    torch.manual_seed(4)
    other = flatten_params(build())
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("name", list(SMALL_MODELS))
def test_flatten_unflatten_round_trip(name):
    build, input_shape = SMALL_MODELS[name]
    torch.manual_seed(0)
    source, target = build().eval(), build().eval()
    vec = flatten_params(source)
    assert vec.shape == (count_parameters(source),)
    assert not torch.equal(vec, flatten_params(target))
    assert unflatten_params_(target, vec) is target
    assert torch.equal(flatten_params(target), vec)
    x = torch.randn(input_shape)
    assert torch.equal(source(x), target(x))


def test_flatten_params_is_detached_copy():
    model = MLP(hidden=(4,))
    vec = flatten_params(model)
    vec.zero_()
    assert not vec.requires_grad
    assert flatten_params(model).abs().sum() > 0


@pytest.mark.parametrize("bad_shape", [(10,), (count_parameters(MLP(hidden=(4,))) + 1,), (1, 310)])
def test_unflatten_rejects_wrong_length(bad_shape):
    model = MLP(hidden=(4,))  # 64*4 + 4 + 4*10 + 10 = 310 parameters
    before = flatten_params(model)
    with pytest.raises(ValueError, match="expected a 1-D vector of length 310"):
        unflatten_params_(model, torch.zeros(bad_shape))
    assert torch.equal(flatten_params(model), before), "a rejected vector must not change the model"


# ---------------------------------------------------------------- layer names


@pytest.mark.parametrize(
    "model, first, last",
    [(MnistCNN(), "conv1", "fc2"), (MLP(hidden=(32, 16)), "fc1", "fc3"), (ResNet18(width=8), "conv1", "fc")],
    ids=["mnist_cnn", "mlp", "resnet"],
)
def test_first_and_last_layer(model, first, last):
    assert first_layer(model) == first
    assert last_layer(model) == last


def test_first_layer_needs_a_weight_layer():
    with pytest.raises(ValueError, match="no Conv2d or Linear layer"):
        first_layer(nn.Sequential(nn.BatchNorm1d(3)))


@pytest.mark.parametrize("name", list(SMALL_MODELS))
def test_layer_names_are_in_forward_order(name):
    build, input_shape = SMALL_MODELS[name]
    model = build()
    names = layer_names(model)
    called = []
    modules = dict(model.named_modules())
    for n in names:
        modules[n].register_forward_hook(lambda *_, n=n: called.append(n))
    model(torch.zeros(input_shape))
    assert called == names
    assert all(any(True for _ in modules[n].parameters(recurse=False)) for n in names)


def test_layer_names_of_mnist_cnn():
    assert layer_names(MnistCNN()) == ["conv1", "conv2", "fc1", "fc2"]


# ---------------------------------------------------------------- factories


def test_make_model_builds_each_name_with_kwargs():
    assert isinstance(make_model("mnist_cnn", in_channels=3, image_size=32), MnistCNN)
    assert make_model("mlp", in_features=20, hidden=()).fc1.in_features == 20
    assert make_model("resnet18", width=8, num_classes=4).fc.out_features == 4


def test_make_model_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown model 'vgg'; known models: mlp, mnist_cnn, resnet18"):
        make_model("vgg")


def test_model_for_tuple_and_dataset():
    cnn = model_for((3, 32, 10), "mnist_cnn")
    assert cnn(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    digits = SimpleNamespace(x=torch.zeros(5, 1, 8, 8), num_classes=10)
    assert model_for(digits, "mlp").fc1.in_features == 64
    pacs = SimpleNamespace(x=torch.zeros(2, 3, 64, 64), num_classes=7)
    resnet = model_for(pacs, "resnet18", width=8)
    assert resnet.conv1.in_channels == 3 and resnet.fc.out_features == 7
    tabular = SimpleNamespace(x=torch.zeros(5, 13), num_classes=3)
    with pytest.raises(ValueError, match=r"needs square images \(C, S, S\), got sample shape \(13,\)"):
        model_for(tabular, "mnist_cnn")


# ---------------------------------------------------------------- BackPACK


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # BackPACK hooks; input needs no grad
def test_backpack_diag_ggn_exact_on_converted_resnet():
    backpack = pytest.importorskip("backpack", reason="backpack-for-pytorch is not installed")
    from backpack.extensions import DiagGGNExact

    torch.manual_seed(0)
    model = backpack.extend(ResNet18(width=8, norm="batch").eval(), use_converter=True)
    loss_fn = backpack.extend(nn.CrossEntropyLoss())
    fc = dict(model.named_modules())["fc"]
    features = []
    fc.register_forward_hook(lambda module, inputs, output: features.append(inputs[0].detach()))
    x, y = torch.randn(3, 3, 8, 8), torch.tensor([0, 4, 9])

    logits = model(x)
    with backpack.backpack(DiagGGNExact()):
        loss_fn(logits, y).backward()

    for name, p in model.named_parameters():
        assert hasattr(p, "diag_ggn_exact"), name
        assert p.diag_ggn_exact.shape == p.shape, name
        assert (p.diag_ggn_exact >= -1e-7).all(), f"{name}: the GGN is positive semi-definite"
    # Last layer in closed form: diag GGN[c, j] = mean_n p_nc (1 - p_nc) a_nj^2
    probs = logits.detach().softmax(dim=1)
    expected = (probs * (1 - probs)).T @ features[0].pow(2) / len(x)
    torch.testing.assert_close(fc.weight.diag_ggn_exact, expected)


def test_model_for_pads_small_images_and_padding_keeps_sizes():
    from fuhelpers.models import MnistCNN, mnist_cnn_output_size, model_for

    assert mnist_cnn_output_size(28) == 4 and mnist_cnn_output_size(8) < 1
    assert mnist_cnn_output_size(8, 5, padding=2) == 2
    net = model_for((1, 8, 10), "mnist_cnn")
    assert net.conv1.padding == (2, 2)
    assert net(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    assert model_for((1, 28, 10), "mnist_cnn").conv1.padding == (0, 0)
    with pytest.raises(ValueError, match="try padding=2"):
        MnistCNN(image_size=8)
