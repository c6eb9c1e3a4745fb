"""Tests of the data path: `TensorLoader`'s order and resume, and the built-in data modules.

MNIST is tested on small IDX files the tests write themselves, read by torchvision's own parser,
because no data set may be downloaded here.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest
import torch

from ltrain.data import MNIST, DataModule, Digits, LightningDataModule, TensorLoader


def ids_of(loader: TensorLoader) -> list[int]:
    return torch.cat([batch[0] for batch in loader]).tolist()


# TensorLoader


def test_tensors_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="same number of samples"):
        TensorLoader(torch.zeros(5), torch.zeros(4))
    with pytest.raises(ValueError, match="batch_size"):
        TensorLoader(torch.zeros(5), batch_size=0)
    with pytest.raises(ValueError, match="at least one"):
        TensorLoader()


def test_a_single_tensor_still_yields_tuples():
    batches = list(TensorLoader(torch.arange(5), batch_size=2))
    assert all(isinstance(b, tuple) and len(b) == 1 for b in batches)
    assert [b[0].tolist() for b in batches] == [[0, 1], [2, 3], [4]]


def test_batches_keep_tensors_aligned():
    x = torch.arange(20)
    loader = TensorLoader(x, x * 10, x.float(), batch_size=6, shuffle=True, seed=3)
    for a, b, c in loader:
        assert torch.equal(b, a * 10) and torch.equal(c, a.float())


def test_drop_last_len():
    x = torch.arange(10)
    assert len(TensorLoader(x, batch_size=3)) == 4
    assert len(TensorLoader(x, batch_size=3, drop_last=True)) == 3
    assert len(TensorLoader(x, batch_size=5, drop_last=True)) == 2
    kept = list(TensorLoader(x, batch_size=3, drop_last=True, shuffle=True))
    assert len(kept) == 3 and all(len(b[0]) == 3 for b in kept)
    assert [len(b[0]) for b in TensorLoader(x, batch_size=3)] == [3, 3, 3, 1]


def test_unshuffled_batches_are_views():
    x = torch.randn(10, 4)
    for (batch,) in TensorLoader(x, batch_size=4):
        assert batch._base is x
    first = next(iter(TensorLoader(x, batch_size=4)))[0]
    first[0, 0] = 123.0
    assert x[0, 0] == 123.0


def test_every_sample_seen_once_per_epoch():
    loader = TensorLoader(torch.arange(103), batch_size=10, shuffle=True)
    first, second = ids_of(loader), ids_of(loader)
    assert sorted(first) == sorted(second) == list(range(103))
    assert first != second, "a completed pass should move on to the next epoch's order"
    assert first != list(range(103))


def test_shuffled_loader_is_reproducible_from_seed():
    x = torch.arange(50)
    torch.manual_seed(1)
    a = ids_of(TensorLoader(x, batch_size=8, shuffle=True, seed=7))
    torch.manual_seed(2)
    torch.rand(100)
    b = ids_of(TensorLoader(x, batch_size=8, shuffle=True, seed=7))
    assert a == b, "the order must depend on the seed alone, not on the global RNG"
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(7)).tolist()
    assert a == expected
    assert a != ids_of(TensorLoader(x, batch_size=8, shuffle=True, seed=8))


def test_set_epoch_picks_that_epochs_order():
    x = torch.arange(40)
    plain = TensorLoader(x, batch_size=8, shuffle=True, seed=5)
    orders = [ids_of(plain) for _ in range(3)]
    assert plain.epoch == 3
    jumped = TensorLoader(x, batch_size=8, shuffle=True, seed=5)
    jumped.set_epoch(2)
    assert ids_of(jumped) == orders[2]
    jumped.set_epoch(0)
    assert ids_of(jumped) == orders[0]


def test_loader_resumes_mid_epoch_with_the_same_remaining_batches():
    x = torch.arange(100)
    reference = TensorLoader(x, batch_size=7, shuffle=True, seed=11)
    reference.set_epoch(4)
    full = [b[0].tolist() for b in reference]
    after = ids_of(reference)

    interrupted = TensorLoader(x, batch_size=7, shuffle=True, seed=11)
    interrupted.set_epoch(4)
    it = iter(interrupted)
    done = [next(it)[0].tolist() for _ in range(5)]
    state = interrupted.state_dict()
    assert state == {"epoch": 4, "batches_yielded": 5}

    resumed = TensorLoader(x, batch_size=7, shuffle=True, seed=11)
    resumed.load_state_dict(state)
    resumed.set_epoch(4)  # as the trainer does before the resumed epoch
    rest = [b[0].tolist() for b in resumed]
    assert done + rest == full
    assert resumed.state_dict() == {"epoch": 5, "batches_yielded": 0}
    assert ids_of(resumed) == after


def test_resume_point_is_dropped_when_another_epoch_is_set():
    loader = TensorLoader(torch.arange(30), batch_size=4, shuffle=True)
    loader.load_state_dict({"epoch": 2, "batches_yielded": 3})
    loader.set_epoch(3)
    assert len(list(loader)) == len(loader)


def test_load_state_dict_refuses_a_position_past_the_end():
    loader = TensorLoader(torch.arange(10), batch_size=4)
    with pytest.raises(ValueError, match=r"batches_yielded must be in \[0, 3\]"):
        loader.load_state_dict({"epoch": 0, "batches_yielded": 4})


# Digits


@pytest.fixture
def numbered_digits(monkeypatch):
    """Digits whose pixels 0 and 1 spell each sample's row number, so splits can be traced."""
    import numpy as np
    import sklearn.datasets
    from sklearn.utils import Bunch

    rows = np.arange(1797)
    images = np.zeros((1797, 8, 8))
    images[:, 0, 0], images[:, 0, 1] = rows % 17, rows // 17
    fake = Bunch(images=images, target=rows % 10)
    monkeypatch.setattr(sklearn.datasets, "load_digits", lambda: fake)


def split_rows(seed: int) -> list[list[int]]:
    dm = Digits(seed=seed)
    dm.setup("fit")
    loaders = (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader())
    out = []
    for loader in loaders:
        x = torch.cat([b[0] for b in loader]).long()
        out.append(sorted((x[:, 0, 0, 0] + 17 * x[:, 0, 0, 1]).tolist()))
    return out


def test_digits_split_is_seeded_and_disjoint(numbered_digits):
    train, val, test = split_rows(0)
    assert (len(train), len(val), len(test)) == (1259, 269, 269)
    assert sorted(train + val + test) == list(range(1797)), "splits must partition the data"
    assert split_rows(0) == [train, val, test]
    assert split_rows(1)[1] != val


def test_digits_are_the_real_bundled_images():
    dm = Digits()
    dm.setup("fit")
    x, y = dm._split("train")
    assert x.dtype == torch.uint8 and x.shape[1:] == Digits.dims and int(x.max()) == 16
    assert y.dtype == torch.int64 and set(y.tolist()) == set(range(Digits.num_classes))


def test_digits_batches_become_floats_after_transfer():
    dm = Digits(batch_size=32)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (32, *Digits.dims)
    assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < Digits.num_classes
    fx, fy = dm.on_after_batch_transfer((x, y), 0)
    assert fx.dtype == torch.float32
    assert torch.equal(fx, x.float() / 16) and 0 <= fx.min() and fx.max() <= 1
    assert fy is y


def test_digits_loads_once_across_stages(monkeypatch):
    import sklearn.datasets

    calls = []
    real = sklearn.datasets.load_digits
    monkeypatch.setattr(sklearn.datasets, "load_digits", lambda: calls.append(1) or real())
    dm = Digits()
    for stage in ("fit", "validate", "test", "predict"):
        dm.setup(stage)
    assert len(calls) == 1
    assert len(dm.predict_dataloader()) == len(dm.test_dataloader())


def test_digits_arguments_are_validated():
    with pytest.raises(ValueError, match="batch_size"):
        Digits(batch_size=0)
    with pytest.raises(ValueError, match=r"val_fraction must be a number in \[0, 1\)"):
        Digits(val_fraction=1.0)
    with pytest.raises(ValueError, match="test_fraction"):
        Digits(test_fraction=-0.1)
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction"):
        Digits(val_fraction=0.5, test_fraction=0.5)


def test_digits_without_scikit_learn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'ltrain\[examples\]'"):
        Digits().setup("fit")


def test_loaders_before_setup_say_so():
    with pytest.raises(RuntimeError, match="setup"):
        Digits().train_dataloader()


# MNIST


def write_idx(raw: Path, prefix: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    n = len(labels)
    header = struct.pack(">IIII", 0x00000803, n, 28, 28)
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.numpy().tobytes())
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 0x00000801, n) + labels.numpy().tobytes()
    )


@pytest.fixture
def mnist_root(tmp_path: Path) -> tuple[Path, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    written = {}
    for prefix, n in (("train", 200), ("t10k", 50)):
        images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        labels = torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8)
        write_idx(raw, prefix, images, labels)
        written[prefix] = (images, labels)
    return tmp_path, written


def test_mnist_reads_idx_files_written_by_the_test(mnist_root):
    root, written = mnist_root
    dm = MNIST(root=str(root), val_split=0, batch_size=64)
    dm.setup("test")
    x, y = (
        torch.cat([b[0] for b in dm.test_dataloader()]),
        torch.cat([b[1] for b in dm.test_dataloader()]),
    )
    assert x.dtype == torch.uint8 and x.shape == (50, *MNIST.dims)
    assert torch.equal(x.squeeze(1), written["t10k"][0])
    assert y.dtype == torch.int64 and torch.equal(y, written["t10k"][1].long())

    dm.setup("fit")
    train_x, train_y = dm._split("train")
    assert torch.equal(train_x.squeeze(1), written["train"][0])
    assert torch.equal(train_y, written["train"][1].long())


def test_mnist_batches_become_floats_after_transfer(mnist_root):
    root, _ = mnist_root
    plain, normalized = (MNIST(root=str(root), val_split=20, normalize=n) for n in (False, True))
    plain.setup("fit")
    normalized.setup("fit")
    batch = next(iter(plain.val_dataloader()))
    fx, fy = plain.on_after_batch_transfer(batch, 0)
    assert fx.dtype == torch.float32 and torch.equal(fx, batch[0].float() / 255)
    nx, _ = normalized.on_after_batch_transfer(batch, 0)
    assert torch.allclose(nx, (batch[0].float() / 255 - 0.1307) / 0.3081)
    assert torch.equal(fy, batch[1])


def test_mnist_val_split_fraction_and_count(mnist_root):
    root, written = mnist_root

    def sizes(val_split: int | float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        dm = MNIST(root=str(root), val_split=val_split, seed=seed)
        dm.setup("fit")
        return dm._split("train")[0], dm._split("val")[0]

    train, val = sizes(50)
    assert (len(train), len(val)) == (150, 50)
    f_train, f_val = sizes(0.25)
    assert torch.equal(f_train, train) and torch.equal(f_val, val)
    rows = {bytes(r.numpy()) for r in torch.cat([train, val])}
    assert rows == {bytes(r.numpy()) for r in written["train"][0].unsqueeze(1)}
    assert not torch.equal(sizes(50, seed=1)[1], val)
    with pytest.raises(ValueError, match="leaves no training images"):
        sizes(200)
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\)"):
        MNIST(val_split=1.5)


def test_mnist_missing_files_error_names_folder(tmp_path):
    dm = MNIST(root=str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "MNIST" / "raw") in message
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        assert name in message
    assert "or set download: true where there is internet" in message


def test_datamodule_names_are_exported():
    assert LightningDataModule is DataModule
    assert issubclass(Digits, DataModule) and issubclass(MNIST, DataModule)


# ---------------------------------------------------------------------- CIFAR10


def write_cifar_batches(folder, per_file: int = 4, seed: int = 0):
    """Tiny CIFAR-10 binary files: records of one label byte then 3072 pixel bytes."""
    generator = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = torch.randint(0, 10, (per_file, 1), generator=generator, dtype=torch.uint8)
        pixels = torch.randint(0, 256, (per_file, 3072), generator=generator, dtype=torch.uint8)
        (folder / name).write_bytes(torch.cat([labels, pixels], dim=1).numpy().tobytes())
        written[name] = (pixels.view(-1, 3, 32, 32), labels.view(-1).long())
    return written


def test_cifar10_reads_binary_batches_without_pickle(tmp_path):
    from ltrain.data import CIFAR10

    written = write_cifar_batches(tmp_path / "cifar-10-batches-bin")
    data = CIFAR10(root=str(tmp_path), batch_size=5, val_split=4)
    data.setup("test")
    images, labels = next(iter(data.test_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 32, 32)
    assert torch.equal(images, written["test_batch.bin"][0])
    assert torch.equal(labels, written["test_batch.bin"][1])
    data.setup("fit")
    assert sum(len(b[1]) for b in data.train_dataloader()) == 16
    assert sum(len(b[1]) for b in data.val_dataloader()) == 4
    floats, _ = data.on_after_batch_transfer((images, labels), 0)
    assert floats.dtype == torch.float32
    assert floats.mean(dim=(0, 2, 3)).abs().max() < 2.5  # normalised per channel


def test_cifar10_missing_files_error_names_folder(tmp_path):
    from ltrain.data import CIFAR10
    from ltrain.errors import MissingDataError

    data = CIFAR10(root=str(tmp_path))
    with pytest.raises(MissingDataError, match="cifar-10-batches-bin must hold data_batch_1.bin"):
        data.setup("fit")


def test_cifar10_truncated_file_is_refused(tmp_path):
    from ltrain.data import CIFAR10

    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar_batches(folder)
    (folder / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a CIFAR-10 binary batch"):
        CIFAR10(root=str(tmp_path)).setup("test")


def test_a_data_set_goes_to_the_gpu_only_when_it_fits(monkeypatch):
    from ltrain.data import images

    x = torch.zeros(1000, 1, 8, 8, dtype=torch.uint8)  # 64,000 bytes
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (256_000, 10**9))
    assert images._fits_on_device(torch.device("cuda", 0), x)  # a quarter of the free memory
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (255_999, 10**9))
    assert not images._fits_on_device(torch.device("cuda", 0), x)
    assert not images._fits_on_device(torch.device("cpu"), x)


def test_on_the_cpu_the_data_set_stays_where_it_was():
    data = Digits(batch_size=16)
    data.trainer = type("FakeTrainer", (), {"device": torch.device("cpu")})()
    data.setup("fit")
    before = data._splits["train"][0]
    assert data.train_dataloader().tensors[0] is before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_the_data_set_lives_on_the_device():
    data = Digits(batch_size=16)
    data.trainer = type("FakeTrainer", (), {"device": torch.device("cuda", 0)})()
    data.setup("fit")
    x, y = next(iter(data.train_dataloader()))
    assert x.device.type == "cuda" and x.dtype == torch.uint8 and y.device.type == "cuda"
