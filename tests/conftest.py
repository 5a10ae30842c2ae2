import os

import pytest
import torch

os.environ.setdefault("FUHELPERS_PROGRESS", "0")
torch.set_num_threads(1)


def make_blobs(n=60, num_classes=3, features=16, seed=0):
    """Tiny separable image-shaped data: (n, 1, 4, 4) with class-dependent means."""
    from fuhelpers.data import ArrayDataset

    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    centers = torch.randn(num_classes, features, generator=g) * 2
    x = centers[y] + 0.5 * torch.randn(n, features, generator=g)
    return ArrayDataset(x=x.view(n, 1, 4, 4).float(), y=y.long(), classes=[str(k) for k in range(num_classes)])


def tiny_net(seed=0, features=16, num_classes=3):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(features, 8), torch.nn.Tanh(),
                               torch.nn.Linear(8, num_classes))


@pytest.fixture
def blobs():
    return make_blobs()
