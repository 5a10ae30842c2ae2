"""The errors data loading raises, and the advice their messages carry."""

from __future__ import annotations

from .roots import DATA_ENV_VAR


class DatasetNotFoundError(FileNotFoundError):
    """No copy of a dataset was found in any data root and none could be downloaded.

    The message names the dataset, every place looked at, why no download happened, and how to fix it.
    """


class DataIntegrityError(ValueError):
    """A data file exists but is corrupt, truncated, or does not match its published checksum."""


FIX_HINT = (
    "To fix this, either\n"
    f"  * set {DATA_ENV_VAR}=/path/to/data, a folder that holds <dataset>/ (for example mnist/);\n"
    "  * put the project's offline data folder at ../shared/data beside the repository;\n"
    "  * run on a machine with network access and a working torchvision, which downloads MNIST,\n"
    "    Fashion-MNIST and CIFAR-10 into the user cache (PACS cannot be downloaded this way); or\n"
    '  * use an embedded dataset that needs no files: load_dataset("digits") or load_dataset("mnist5k").'
)

CORRUPT_HINT = (
    "Delete the file and restore it from the offline data folder (../shared/data), "
    "or remove it from the user cache so that it is downloaded again."
)


class _DownloadUnavailable(Exception):
    """Internal: the reason why no download happened, folded into DatasetNotFoundError."""
