import os
import pathlib

import pytest
import torch

os.environ.setdefault("FUHELPERS_PROGRESS", "0")
torch.set_num_threads(1)

HERE = pathlib.Path(__file__).resolve().parent
# Folders collected only when named on the command line: the browser test needs a built book and Chromium
# (make browser).
ONLY_WHEN_ASKED = (HERE / "browser",)


def _asked_for(folder, config):
    for arg in config.args:
        path = (config.invocation_params.dir / arg.split("::")[0]).resolve()
        if path == folder or folder in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path, config):
    for folder in ONLY_WHEN_ASKED:
        if (collection_path == folder or folder in collection_path.parents) and not _asked_for(folder, config):
            return True
    return None


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
