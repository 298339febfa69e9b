from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from research import data
from research.data import CLASS_NAMES, load, read_idx, split_train_val
from research.errors import DataError, UsageError
from tests.conftest import write_fake_dataset, write_idx


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_images_and_labels(tmp_path: Path, compress: bool) -> None:
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    labels = np.array([0, 9, 4])
    image_path = write_idx(tmp_path / "images", images, compress=compress)
    label_path = write_idx(tmp_path / "labels", labels, compress=compress)

    read_images = read_idx(image_path, 3)
    read_labels = read_idx(label_path, 3)

    assert read_images.dtype == torch.uint8
    assert read_images.shape == (3, 28, 28)
    assert torch.equal(read_images, torch.from_numpy(images.astype(np.uint8)))
    assert read_labels.tolist() == [0, 9, 4]


def test_bad_magic_number_named(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "bad", np.zeros((2, 28, 28)), magic=0x1234)
    with pytest.raises(DataError) as caught:
        read_idx(path)
    assert str(path) in str(caught.value)
    assert "bad magic number 0x00001234" in str(caught.value)


def test_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "short"
    path.write_bytes(b"\x00\x00\x08")
    with pytest.raises(DataError, match="header truncated"):
        read_idx(path)


def test_truncated_body(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "images", np.zeros((4, 28, 28)))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError) as caught:
        read_idx(path, 4)
    assert str(path) in str(caught.value)
    assert "truncated" in str(caught.value)


def test_truncated_gzip(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "images", np.zeros((4, 28, 28)), compress=True)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_idx(path)


def test_wrong_image_size(tmp_path: Path) -> None:
    path = tmp_path / "images"
    path.write_bytes(b"\x00\x00\x08\x03" + (1).to_bytes(4, "big") + (32).to_bytes(4, "big") * 2 + bytes(1024))
    with pytest.raises(DataError, match="32x32, expected 28x28"):
        read_idx(path)


def test_label_out_of_range(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels", np.array([1, 12]))
    with pytest.raises(DataError, match="label 12"):
        read_idx(path)


def test_wrong_count(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels", np.array([1, 2]))
    with pytest.raises(DataError, match="header says 2 items, expected 60000"):
        read_idx(path, 60_000)


def test_missing_dataset_lists_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setenv("RESEARCH_CACHE_DIR", str(tmp_path / "cache"))
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    with pytest.raises(DataError) as caught:
        load(explicit)
    message = str(caught.value)
    assert str(explicit) in message
    assert str(tmp_path / "cache" / "fashion-mnist") in message
    assert str(tmp_path / "debian") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "research data fetch" in message


def test_explicit_folder_comes_first(tmp_path: Path) -> None:
    folder = write_fake_dataset(tmp_path / "fake", n_train=100, n_test=20)
    dataset = load(folder, val_fraction=0.2)
    assert dataset.source == folder
    assert dataset.sizes() == {"train": 80, "val": 20, "test": 20}


def test_uncompressed_files_found(tmp_path: Path) -> None:
    folder = write_fake_dataset(tmp_path / "plain", n_train=50, n_test=10, compress=False)
    assert load(folder).sizes() == {"train": 40, "val": 10, "test": 10}


def test_split_is_deterministic_and_disjoint() -> None:
    train_a, val_a = split_train_val(1000, 0.2, seed=3)
    train_b, val_b = split_train_val(1000, 0.2, seed=3)
    train_c, _ = split_train_val(1000, 0.2, seed=4)
    assert torch.equal(train_a, train_b)
    assert torch.equal(val_a, val_b)
    assert not torch.equal(train_a, train_c)
    assert len(val_a) == 200
    assert set(train_a.tolist()).isdisjoint(val_a.tolist())
    assert len(set(train_a.tolist()) | set(val_a.tolist())) == 1000


def test_train_size_larger_than_split_rejected(tmp_path: Path) -> None:
    folder = write_fake_dataset(tmp_path / "fake", n_train=100, n_test=20)
    with pytest.raises(UsageError, match="--train-size 500 is larger than the 80"):
        load(folder, train_size=500)


def test_batches_scale_to_unit_range(tmp_path: Path) -> None:
    folder = write_fake_dataset(tmp_path / "fake", n_train=100, n_test=20)
    images, labels = next(load(folder).train.batches(16))
    assert images.shape == (16, 1, 28, 28)
    assert images.dtype == torch.float32
    assert images.min() >= 0.0
    assert images.max() <= 1.0
    assert labels.dtype == torch.int64


def test_real_data_shapes_and_label_counts(real_data_dir: Path) -> None:
    dataset = load(real_data_dir)
    assert dataset.train.images.shape == (48_000, 28, 28)
    assert dataset.val.images.shape == (12_000, 28, 28)
    assert dataset.test.images.shape == (10_000, 28, 28)
    all_train_labels = torch.cat([dataset.train.labels, dataset.val.labels])
    assert torch.bincount(all_train_labels).tolist() == [6000] * 10
    assert torch.bincount(dataset.test.labels).tolist() == [1000] * 10
    assert len(CLASS_NAMES) == 10


def test_real_data_gzipped_copy_reads_the_same(real_data_dir: Path, tmp_path: Path) -> None:
    source = data.find_file(real_data_dir, "t10k-labels-idx1-ubyte")
    assert source is not None
    raw = gzip.decompress(source.read_bytes()) if source.suffix == ".gz" else source.read_bytes()
    plain = tmp_path / "t10k-labels-idx1-ubyte"
    plain.write_bytes(raw)
    assert torch.equal(read_idx(plain, 10_000), read_idx(source, 10_000))
