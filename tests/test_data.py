"""Tests for fuhelpers.data: readers on tiny generated files, loaders, domain variants and backdoor helpers."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fuhelpers import data
from fuhelpers.data import ArrayDataset, DataIntegrityError, DatasetNotFoundError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ------------------------------------------------------------------------------------------------
# Helpers that write tiny files in the real formats
# ------------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array in the idx format."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> bytes:
    content = idx_bytes(array)
    path.write_bytes(gzip.compress(content) if compress else content)
    return content


def write_mnist_folder(root: Path, n: int = 5, sums: bool = True, corrupt: str | None = None) -> dict:
    """A tiny MNIST-layout folder ``root/mnist`` with 28x28 images; returns the arrays written."""
    folder = root / "mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n, dtype=np.uint8),
    }
    lines = []
    for base, array in arrays.items():
        content = write_idx(folder / f"{base}.gz", array, compress=True)
        digest = "0" * 64 if base == corrupt else hashlib.sha256(content).hexdigest()
        lines.append(f"{digest}  {base}")
    if sums:
        (folder / "SHA256SUMS.uncompressed").write_text("\n".join(lines) + "\n")
    return arrays


def jpeg_bytes(rgb: tuple[int, int, int], size: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_tar(path: Path, files: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


def red_of(ds: ArrayDataset) -> np.ndarray:
    """Mean red channel of each image, back on the 0-255 scale."""
    return (ds.x[:, 0].mean(dim=(1, 2)) * 255).numpy()


@pytest.fixture
def isolated_roots(tmp_path, monkeypatch):
    """Point every data root and the cache at empty temporary folders."""
    roots = {"env": tmp_path / "env_data", "repo": tmp_path / "repo_shared", "cache": tmp_path / "cache"}
    roots["env"].mkdir()
    monkeypatch.setenv(data.DATA_ENV_VAR, str(roots["env"]))
    monkeypatch.setenv(data.CACHE_ENV_VAR, str(roots["cache"]))
    monkeypatch.setattr(data.roots, "_repo_data_dir", lambda: roots["repo"])
    return roots


def digit_dataset(n: int = 100, h: int = 8, seed: int = 0) -> ArrayDataset:
    generator = torch.Generator().manual_seed(seed)
    return ArrayDataset(x=torch.rand(n, 1, h, h, generator=generator),
                        y=torch.arange(n) % 10, classes=data.DIGIT_CLASSES)


# ------------------------------------------------------------------------------------------------
# ArrayDataset
# ------------------------------------------------------------------------------------------------


def test_array_dataset_subset_keeps_classes_and_domains():
    ds = ArrayDataset(x=torch.arange(6.0).reshape(6, 1), y=torch.tensor([0, 1, 2, 0, 1, 2]),
                      classes=["a", "b", "c"], domains=torch.tensor([0, 0, 1, 1, 2, 2]),
                      domain_names=["d0", "d1", "d2"])
    part = ds.subset([4, 1])
    assert part.x.flatten().tolist() == [4.0, 1.0]
    assert part.y.tolist() == [1, 1]
    assert part.domains.tolist() == [2, 0]
    assert part.classes == ["a", "b", "c"] and part.domain_names == ["d0", "d1", "d2"]
    assert part.num_classes == 3 and len(part) == 2
    x0, y0 = part[0]
    assert float(x0) == 4.0 and int(y0) == 1


def test_array_dataset_rejects_out_of_range_labels_and_length_mismatch():
    with pytest.raises(ValueError, match="classes"):
        ArrayDataset(x=torch.zeros(2, 1), y=torch.tensor([0, 3]), classes=["a", "b"])
    with pytest.raises(ValueError, match="samples"):
        ArrayDataset(x=torch.zeros(3, 1), y=torch.tensor([0, 1]), classes=["a", "b"])


# ------------------------------------------------------------------------------------------------
# idx reader and checksums
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trips_gz_and_raw(tmp_path, compress):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    write_idx(path, array, compress)
    result = data.read_idx(path)
    assert result.shape == (2, 3, 4)
    np.testing.assert_array_equal(result, array)


def test_read_idx_rejects_wrong_magic_number(tmp_path):
    content = bytearray(idx_bytes(np.zeros((2, 2), dtype=np.uint8)))
    content[0] = 0x01
    path = tmp_path / "bad.idx"
    path.write_bytes(bytes(content))
    with pytest.raises(DataIntegrityError, match="magic number"):
        data.read_idx(path)


def test_read_idx_rejects_truncated_gzip_with_clear_message(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8).reshape(10, 20)))
    path = tmp_path / "cut.idx.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataIntegrityError) as caught:
        data.read_idx(path)
    assert "truncated" in str(caught.value) and str(path) in str(caught.value)
    assert isinstance(caught.value.__cause__, (EOFError, gzip.BadGzipFile))


def test_read_idx_rejects_payload_shorter_than_header_says(tmp_path):
    path = tmp_path / "short.idx"
    path.write_bytes(idx_bytes(np.zeros((4, 4), dtype=np.uint8))[:-3])
    with pytest.raises(DataIntegrityError, match="truncated"):
        data.read_idx(path)


def test_mnist_loader_verifies_matching_sums(tmp_path):
    arrays = write_mnist_folder(tmp_path)
    ds = data.load_dataset("mnist", "test", root=tmp_path, download=False)
    assert ds.x.shape == (5, 1, 28, 28) and ds.x.dtype == torch.float32
    np.testing.assert_allclose(ds.x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"] / 255.0, atol=1e-6)
    assert ds.y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_mnist_loader_rejects_wrong_sum_naming_the_file(tmp_path):
    write_mnist_folder(tmp_path, corrupt="train-images-idx3-ubyte")
    with pytest.raises(DataIntegrityError) as caught:
        data.load_dataset("mnist", "train", root=tmp_path, download=False)
    message = str(caught.value)
    assert "train-images-idx3-ubyte" in message and "0" * 64 in message and "expected" in message


def test_mnist_loader_falls_back_to_published_sums(tmp_path):
    write_mnist_folder(tmp_path, sums=False)  # tiny files cannot match the canonical MNIST sums
    with pytest.raises(DataIntegrityError, match=data.CANONICAL_IDX_SHA256["mnist"]["t10k-images-idx3-ubyte"]):
        data.load_dataset("mnist", "test", root=tmp_path, download=False)


# ------------------------------------------------------------------------------------------------
# Image archives
# ------------------------------------------------------------------------------------------------


def write_tiny_cifar(root: Path) -> None:
    """Three classes whose order comes from batches.meta; red channel encodes 40*class + 10*file."""
    classes = ["cat", "airplane", "dog"]
    files = {}
    for split, count in (("train", 3), ("test", 1)):
        for class_id, name in enumerate(classes):
            for k in reversed(range(count)):  # written out of order on purpose
                files[f"{split}/{name}/{k:04d}.jpg"] = jpeg_bytes((40 * class_id + 10 * k, 0, 0), 32)
    write_tar(root / "cifar10" / "cifar10-jpeg.tar.gz", files)
    (root / "cifar10" / "batches.meta").write_bytes(pickle.dumps({"label_names": classes}, protocol=2))


def test_cifar_jpeg_tar_reads_labels_classes_and_order(isolated_roots):
    write_tiny_cifar(isolated_roots["env"])
    train = data.load_dataset("cifar10", "train", download=False)
    test = data.load_dataset("cifar10", "test", download=False)
    assert train.classes == ["cat", "airplane", "dog"]
    assert train.x.shape == (9, 3, 32, 32) and test.x.shape == (3, 3, 32, 32)
    assert train.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    expected_red = [40 * c + 10 * k for c in range(3) for k in range(3)]
    np.testing.assert_allclose(red_of(train), expected_red, atol=4)
    assert (isolated_roots["cache"] / "cifar10_train.npz").is_file()


def test_cifar_cache_is_used_then_rebuilt_when_archive_changes(isolated_roots, monkeypatch):
    write_tiny_cifar(isolated_roots["env"])
    first = data.load_dataset("cifar10", "train", download=False)
    real_decoder = data.cifar10._decode_image_tar

    def must_not_decode(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(data.cifar10, "_decode_image_tar", must_not_decode)
    torch.testing.assert_close(data.load_dataset("cifar10", "train", download=False).x, first.x)

    tar_path = isolated_roots["env"] / "cifar10" / "cifar10-jpeg.tar.gz"
    write_tar(tar_path, {"train/cat/0000.jpg": jpeg_bytes((200, 0, 0), 32),
                         "test/dog/0000.jpg": jpeg_bytes((100, 0, 0), 32)})
    monkeypatch.setattr(data.cifar10, "_decode_image_tar", real_decoder)
    rebuilt = data.load_dataset("cifar10", "train", download=False)
    assert len(rebuilt) == 1
    np.testing.assert_allclose(red_of(rebuilt), [200], atol=4)


def test_cifar_tar_checked_against_sha256sums(isolated_roots):
    write_tiny_cifar(isolated_roots["env"])
    (isolated_roots["env"] / "SHA256SUMS").write_text(f"{'f' * 64}  cifar10/cifar10-jpeg.tar.gz\n")
    with pytest.raises(DataIntegrityError, match="cifar10-jpeg.tar.gz"):
        data.load_dataset("cifar10", "train", download=False)


def test_corrupt_jpeg_in_tar_raises_integrity_error(isolated_roots):
    write_tar(isolated_roots["env"] / "cifar10" / "cifar10-jpeg.tar.gz",
              {"train/cat/0000.jpg": b"not a jpeg at all"})
    with pytest.raises(DataIntegrityError, match="train/cat/0000.jpg"):
        data.load_dataset("cifar10", "train", download=False)


def test_cifar_python_batches_reader(isolated_roots):
    folder = isolated_roots["env"] / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    pixels = np.arange(2 * 3072, dtype=np.int64).reshape(2, 3072) % 256
    for i in range(1, 6):
        batch = {"data": pixels.astype(np.uint8), "labels": [i % 10, (i + 1) % 10]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": data.CIFAR10_CLASSES}, protocol=2))
    train = data.load_dataset("cifar10", "train", download=False)
    assert train.x.shape == (10, 3, 32, 32)
    assert train.y.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    np.testing.assert_allclose(train.x[0].flatten().numpy() * 255, pixels[0], atol=1e-3)


def test_pacs_tar_domains_classes_and_order(isolated_roots):
    files = {}
    for domain in ("sketch", "photo"):
        for class_name in ("house", "dog"):
            for k in (10, 2):
                red = 100 * (domain == "sketch") + 40 * (class_name == "house") + k
                suffix = "png" if domain == "sketch" else "jpg"  # real PACS-64 names some JPEGs .png
                files[f"PACS-64/{domain}/{class_name}/pic_{k:03d}.{suffix}"] = jpeg_bytes((red, 0, 0), 64)
    write_tar(isolated_roots["env"] / "pacs" / "pacs-64.tar.gz", files)
    ds = data.load_dataset("pacs", "all", download=False)
    assert ds.x.shape == (8, 3, 64, 64)
    assert ds.domain_names == ["photo", "sketch"] and ds.classes == ["dog", "house"]
    assert ds.domains.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert ds.y.tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    np.testing.assert_allclose(red_of(ds), [2, 10, 42, 50, 102, 110, 142, 150], atol=4)
    with pytest.raises(ValueError, match="no official split"):
        data.load_dataset("pacs", "test", download=False)


# ------------------------------------------------------------------------------------------------
# Finding data and downloading
# ------------------------------------------------------------------------------------------------


def test_missing_dataset_names_every_root_and_the_fix(isolated_roots):
    with pytest.raises(DatasetNotFoundError) as caught:
        data.load_dataset("mnist", download=False)
    message = str(caught.value)
    for key in ("env", "repo", "cache"):
        assert str(isolated_roots[key]) in message
    assert "FUHELPERS_DATA" in message and "digits" in message
    assert isinstance(caught.value, FileNotFoundError)


def test_download_failure_is_reported_as_not_found(isolated_roots, monkeypatch):
    class FailingMNIST:
        def __init__(self, root, train, download):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(data.download, "_import_torchvision_datasets", lambda: type("tv", (), {"MNIST": FailingMNIST}))
    with pytest.raises(DatasetNotFoundError, match="Error downloading"):
        data.load_dataset("mnist", download=None)


def test_download_uses_torchvision_layout_in_user_cache(isolated_roots, monkeypatch):
    rng = np.random.default_rng(1)
    written = {}

    class FakeMNIST:
        def __init__(self, root, train, download):
            raw = Path(root) / "MNIST" / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            written["images"] = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
            for base, array in (("t10k-images-idx3-ubyte", written["images"]),
                                ("t10k-labels-idx1-ubyte", np.array([1, 2, 3, 4], dtype=np.uint8))):
                sums[base] = hashlib.sha256(write_idx(raw / base, array, compress=False)).hexdigest()

    sums: dict[str, str] = {}
    monkeypatch.setitem(data.CANONICAL_IDX_SHA256, "mnist", sums)
    monkeypatch.setattr(data.download, "_import_torchvision_datasets", lambda: type("tv", (), {"MNIST": FakeMNIST}))
    ds = data.load_dataset("mnist", "test")
    assert ds.y.tolist() == [1, 2, 3, 4]
    assert (isolated_roots["cache"] / "mnist" / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()


def test_pacs_download_is_refused_with_explanation(isolated_roots):
    with pytest.raises(DatasetNotFoundError, match="PACS cannot be downloaded"):
        data.load_dataset("pacs", "all", download=True)


def test_candidate_roots_order(isolated_roots):
    assert data.candidate_roots() == [isolated_roots["env"], isolated_roots["repo"], isolated_roots["cache"]]


def test_unknown_name_and_split_are_rejected():
    with pytest.raises(ValueError, match="Unknown dataset"):
        data.load_dataset("imagenet")
    with pytest.raises(ValueError, match="split"):
        data.load_dataset("digits", "validation")


# ------------------------------------------------------------------------------------------------
# Embedded datasets and the default chain
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, shape, total", [("digits", (1, 8, 8), 1797), ("mnist5k", (1, 28, 28), 5000)])
def test_embedded_datasets_have_disjoint_deterministic_splits(name, shape, total):
    train, test = data.load_dataset(name, "train"), data.load_dataset(name, "test")
    assert train.x.shape[1:] == shape and test.x.shape[1:] == shape
    assert len(train) + len(test) == total
    assert abs(len(test) - 0.2 * total) <= 10  # per-class rounding
    assert float(train.x.min()) >= 0.0 and float(train.x.max()) == pytest.approx(1.0)
    assert train.y.dtype == torch.int64 and train.num_classes == 10
    torch.testing.assert_close(data.load_dataset(name, "test").x, test.x)
    test_counts = torch.bincount(test.y, minlength=10).float()
    train_counts = torch.bincount(train.y, minlength=10).float()
    assert torch.all((test_counts / (test_counts + train_counts) - 0.2).abs() < 0.01)


def test_stratified_split_indices_are_disjoint_and_complete():
    labels = np.repeat(np.arange(3), [10, 20, 30])
    train_idx, test_idx = data.stratified_split_indices(labels, 0.2, seed=0)
    assert len(np.intersect1d(train_idx, test_idx)) == 0
    assert np.array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(60))
    assert np.bincount(labels[test_idx]).tolist() == [2, 4, 6]
    again = data.stratified_split_indices(labels, 0.2, seed=0)
    assert np.array_equal(again[1], test_idx)


def test_load_mnist_like_falls_back_when_mnist_is_missing(isolated_roots):
    name, ds = data.load_mnist_like("test", download=False)
    assert name == "mnist5k" and len(ds) == 1000
    default = data.load_default(prefer=("mnist", "digits"), download=False)
    assert default.name == "digits" and len(default.train) + len(default.test) == 1797


@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="no ../shared/data on this machine")
def test_real_mnist_train_from_shared_data(monkeypatch):
    monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
    ds = data.load_dataset("mnist", "train", root=SHARED_DATA, download=False)
    assert ds.x.shape == (60000, 1, 28, 28)
    counts = torch.bincount(ds.y, minlength=10)
    assert int(counts.sum()) == 60000 and counts.tolist()[:2] == [5923, 6742]


# ------------------------------------------------------------------------------------------------
# Subsampling
# ------------------------------------------------------------------------------------------------


def test_subsample_is_stratified_and_deterministic():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    ds = ArrayDataset(x=torch.arange(100.0).reshape(100, 1), y=labels, classes=["a", "b", "c"])
    small = data.subsample(ds, 10, seed=3)
    assert torch.bincount(small.y).tolist() == [5, 3, 2]
    assert torch.equal(data.subsample(ds, 10, seed=3).x, small.x)
    assert not torch.equal(data.subsample(ds, 10, seed=4).x, small.x)
    assert len(torch.unique(small.x)) == 10
    everything = data.subsample(ds, 500, seed=0)
    assert len(everything) == 100 and everything.x is not ds.x


# ------------------------------------------------------------------------------------------------
# Domain datasets
# ------------------------------------------------------------------------------------------------


def test_rotated_mnist_domains_and_rotation():
    ds = digit_dataset(n=40)
    rotated = data.rotated_mnist(ds, angles=(0, 90), seed=0)
    assert rotated.domain_names == ["0°", "90°"]
    assert torch.bincount(rotated.domains).tolist() == [20, 20]
    assert torch.equal(rotated.y, ds.y)
    unrotated = rotated.domains == 0
    torch.testing.assert_close(rotated.x[unrotated], ds.x[unrotated], atol=1e-5, rtol=0)
    quarter = rotated.domains == 1
    torch.testing.assert_close(rotated.x[quarter], torch.rot90(ds.x[quarter], 1, dims=(-2, -1)),
                               atol=1e-5, rtol=0)
    assert torch.equal(data.rotated_mnist(ds, angles=(0, 90), seed=0).domains, rotated.domains)


def test_rotate_by_45_degrees_changes_the_image_and_keeps_the_centre():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, :] = 1.0  # horizontal bar through the centre
    turned = data.rotate(x, 45)
    assert turned[0, 0, 4, 4] == pytest.approx(1.0, abs=1e-5)
    assert float((turned - x).abs().max()) > 0.5


def test_colored_mnist_follows_label_noise_and_colour_flip():
    n = 30000
    ds = ArrayDataset(x=torch.ones(n, 1, 2, 2), y=torch.arange(n) % 10, classes=data.DIGIT_CLASSES)
    envs = (0.1, 0.2, 0.9)
    colored = data.colored_mnist(ds, env_probs=envs, label_noise=0.25, seed=0)
    assert colored.x.shape == (n, 2, 2, 2) and colored.classes == ["<5", ">=5"]
    colour = (colored.x[:, 1].sum(dim=(1, 2)) > 0).long()
    assert torch.all(colored.x.sum(dim=1) == 1.0)  # exactly one channel lit
    digit_label = (ds.y >= 5).long()
    assert abs((colored.y == digit_label).float().mean().item() - 0.75) < 0.015
    for env, flip in enumerate(envs):
        in_env = colored.domains == env
        assert abs(in_env.sum().item() - n / 3) <= 1
        agreement = (colour[in_env] == colored.y[in_env]).float().mean().item()
        assert abs(agreement - (1 - flip)) < 0.02


# ------------------------------------------------------------------------------------------------
# Backdoor helpers
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("corner, rows, cols", [
    ("bottom_right", slice(5, 8), slice(5, 8)), ("top_left", slice(0, 3), slice(0, 3)),
    ("top_right", slice(0, 3), slice(5, 8)), ("bottom_left", slice(5, 8), slice(0, 3)),
])
def test_stamp_trigger_changes_exactly_the_corner(corner, rows, cols):
    x = torch.zeros(2, 3, 8, 8)
    stamped = data.stamp_trigger(x, size=3, corner=corner)
    expected = torch.zeros_like(x)
    expected[..., rows, cols] = 1.0
    assert torch.equal(stamped, expected)
    assert torch.count_nonzero(x) == 0  # input untouched
    assert torch.equal(data.stamp_trigger(x[0], size=3, corner=corner), expected[0])


def test_stamp_trigger_validates_arguments():
    with pytest.raises(ValueError, match="size"):
        data.stamp_trigger(torch.zeros(1, 4, 4), size=5)
    with pytest.raises(ValueError, match="corner"):
        data.stamp_trigger(torch.zeros(1, 4, 4), corner="middle")


def test_poison_counts_labels_and_determinism():
    ds = digit_dataset(n=100)
    poisoned, idx = data.poison(ds, fraction=0.5, target=9, seed=1)
    assert len(idx) == 45  # 90 eligible samples
    assert torch.all(ds.y[idx] != 9) and torch.all(poisoned.y[idx] == 9)
    clean = np.setdiff1d(np.arange(100), idx)
    assert torch.equal(poisoned.y[clean], ds.y[clean]) and torch.equal(poisoned.x[clean], ds.x[clean])
    assert torch.all(poisoned.x[idx][..., 5:, 5:] == 1.0)
    again, idx_again = data.poison(ds, fraction=0.5, target=9, seed=1)
    assert np.array_equal(idx, idx_again) and torch.equal(again.x, poisoned.x)
    assert not np.array_equal(data.poison(ds, fraction=0.5, target=9, seed=2)[1], idx)
    with pytest.raises(ValueError, match="fraction"):
        data.poison(ds, fraction=1.5, target=9, seed=0)


def test_triggered_testset_for_attack_success_and_backdoor_accuracy():
    test = digit_dataset(n=50)
    asr_set = data.triggered_testset(test, target=9)
    assert len(asr_set) == 45 and torch.all(asr_set.y == 9)
    assert torch.all(asr_set.x[..., 5:, 5:] == 1.0)
    true_labels = data.triggered_testset(test, target=9, relabel=False)
    assert torch.equal(true_labels.y, test.y[test.y != 9])
    assert torch.equal(true_labels.x, asr_set.x)
