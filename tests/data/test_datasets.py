"""Datasets: digits split, CIFAR batches through the restricted unpickler, image folders, batching."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vitc.data import ImageSet, batches, load_dataset, make_generator, shard
from vitc.errors import VitcError

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("sklearn")


# ---------------------------------------------------------------- digits


def test_digits_split_sizes_shape_and_stratification() -> None:
    sets = {s: load_dataset("digits", s) for s in ("train", "val", "test")}
    assert {s: len(d) for s, d in sets.items()} == {"train": 1257, "val": 180, "test": 360}
    for d in sets.values():
        assert d.images.dtype == torch.uint8 and d.images.shape[1:] == (3, 32, 32)
        assert d.labels.dtype == torch.int64 and d.class_names == [str(i) for i in range(10)]
        assert torch.equal(d.images[:, 0], d.images[:, 2])  # grey replicated
        counts = d.labels.bincount(minlength=10).float()
        assert counts.max() - counts.min() <= 0.1 * counts.mean() + 1  # stratified
    assert int(sets["train"].images.max()) == 255  # 0..16 scaled to the full range
    # the three splits are disjoint: no test image appears in train
    flat = {s: {bytes(x.numpy()) for x in d.images} for s, d in sets.items()}
    assert not flat["test"] & flat["val"]


def test_digits_split_ignores_seed_and_is_deterministic() -> None:
    a = load_dataset("digits", "val", seed=0)
    b = load_dataset("digits", "val", seed=123)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_digits_size_and_channels() -> None:
    d = load_dataset("digits", "val", image_size=16, in_chans=1)
    assert d.images.shape == (180, 1, 16, 16)


def test_fraction_is_a_stratified_seeded_subset_of_train_only() -> None:
    full = load_dataset("digits", "train")
    part = load_dataset("digits", "train", fraction=0.25, seed=1)
    again = load_dataset("digits", "train", fraction=0.25, seed=1)
    other = load_dataset("digits", "train", fraction=0.25, seed=2)
    assert abs(len(part) - 0.25 * len(full)) <= 10
    assert torch.equal(part.images, again.images)
    assert not torch.equal(part.labels, other.labels) or not torch.equal(part.images, other.images)
    want = (full.labels.bincount(minlength=10).float() * 0.25).round()
    assert torch.equal(part.labels.bincount(minlength=10).float(), want)
    assert len(load_dataset("digits", "val", fraction=0.25)) == 180  # val untouched


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "mnist", "split": "train"}, "digits, cifar10, imagefolder"),
        ({"name": "digits", "split": "dev"}, "train, val, test"),
        ({"name": "digits", "split": "train", "fraction": 0.0}, "fraction"),
        ({"name": "digits", "split": "train", "fraction": 1.5}, "fraction"),
        ({"name": "cifar10", "split": "train"}, "data-dir"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(VitcError, match=match):
        load_dataset(**kwargs)


def test_imageset_subset() -> None:
    ds = ImageSet(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.arange(4), ["a", "b", "c", "d"])
    sub = ds.subset([3, 1])
    assert len(sub) == 2 and sub.labels.tolist() == [3, 1] and sub.num_classes == 4


# ---------------------------------------------------------------- CIFAR-10


def _batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"fake",
        b"labels": [int(i % 10) for i in range(n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"x.png"] * n,
    }


def _dump(obj: object, path: Path) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    for i in (1, 2, 3, 4, 5):
        _dump(_batch(40, i), tmp_path / f"data_batch_{i}")
    _dump(_batch(20, 9), tmp_path / "test_batch")
    names = [n.encode() for n in ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")]
    _dump({b"label_names": names, b"num_vis": 3072}, tmp_path / "batches.meta")
    return tmp_path


def test_cifar_loads_with_fixed_stratified_val(cifar_dir: Path) -> None:
    train = load_dataset("cifar10", "train", data_dir=cifar_dir)
    val = load_dataset("cifar10", "val", data_dir=cifar_dir)
    test = load_dataset("cifar10", "test", data_dir=cifar_dir)
    assert (len(train), len(val), len(test)) == (180, 20, 20)
    assert train.images.shape == (180, 3, 32, 32) and train.images.dtype == torch.uint8
    assert val.labels.bincount(minlength=10).tolist() == [2] * 10  # 10% of each class's 20
    assert train.class_names[1] == "car"
    # channel-first layout: first 1024 bytes are the red plane of image 0
    raw = _batch(40, 1)[b"data"][0]
    assert torch.equal(train.images[0, 0].flatten(), torch.from_numpy(raw[:1024]))
    # val is the tail of each class: the last image of batch 5 (class 9) is in val
    last = torch.from_numpy(_batch(40, 5)[b"data"][-1].reshape(3, 32, 32))
    assert any(torch.equal(last, im) for im in val.images)


def test_cifar_resizes_and_accepts_tarball_folder(tmp_path: Path, cifar_dir: Path) -> None:
    d = load_dataset("cifar10", "test", data_dir=cifar_dir, image_size=48)
    assert d.images.shape == (20, 3, 48, 48)
    nested = tmp_path / "outer"
    nested.mkdir()
    (nested / "cifar-10-batches-py").mkdir()
    _dump(_batch(10, 5), nested / "cifar-10-batches-py" / "test_batch")
    d = load_dataset("cifar10", "test", data_dir=nested)
    assert len(d) == 10 and d.class_names[0] == "airplane"  # no batches.meta: built-in names


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("touch PWNED_MARKER",))


def test_malicious_pickle_is_refused_without_side_effect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    bad = _batch(10, 0)
    bad[b"labels"] = _Evil()
    _dump(bad, tmp_path / "test_batch")
    with pytest.raises(VitcError, match=r"refusing to unpickle .*system"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    assert not (tmp_path / "PWNED_MARKER").exists()


def test_pickle_with_other_globals_is_refused(tmp_path: Path) -> None:
    _dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": Path("/")}, tmp_path / "test_batch")
    with pytest.raises(VitcError, match="refusing to unpickle pathlib"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ([1, 2, 3], "expected a dict"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, "no 'data' and 'labels'"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "N x 3072"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 11]}, "0..9"),
    ],
)
def test_cifar_wrong_format(tmp_path: Path, obj: object, match: str) -> None:
    _dump(obj, tmp_path / "test_batch")
    with pytest.raises(VitcError, match=match):
        load_dataset("cifar10", "test", data_dir=tmp_path)


def test_cifar_missing_a_train_batch_is_refused_by_name(cifar_dir: Path) -> None:
    """An interrupted extraction (data_batch_2 and 5 absent) would train on the rest, with another val split:
    one line names what is missing, whichever split is asked for from the train batches."""
    (cifar_dir / "data_batch_2").unlink()
    (cifar_dir / "data_batch_5").unlink()
    for split in ("train", "val"):
        with pytest.raises(VitcError, match=r"is missing data_batch_2, data_batch_5 \(CIFAR-10 has data_batch_1\.\.5"):
            load_dataset("cifar10", split, data_dir=cifar_dir)
    assert len(load_dataset("cifar10", "test", data_dir=cifar_dir)) == 20  # the test split is test_batch alone


@pytest.mark.parametrize("name", ["cifar-10-python.tar.gz", "photos.zip", "notes.txt"])
def test_a_file_given_as_the_data_folder_is_said_to_be_one(tmp_path: Path, name: str) -> None:
    """--data-dir cifar-10-python.tar.gz said "missing folder" of a file that is there: each reader of a data
    folder (training's kind, its image folder, a measured folder) says it is a file, and how to unpack an archive."""
    from vitc.data.files import detect_kind, labelled_files

    file = tmp_path / name
    file.write_bytes(b"PK")
    said = (
        r"unpack the archive \((tar xzf|unzip) .*\) and give the folder it makes"
        if name != "notes.txt"
        else ("give the folder that holds the data")
    )
    for read in (
        lambda: detect_kind(file),
        lambda: load_dataset("imagefolder", "train", data_dir=file),
        lambda: labelled_files(file, "test", ["a"]),
    ):
        with pytest.raises(VitcError, match=rf"^{re.escape(str(file))} is a file, not a folder: {said}$"):
            read()


def test_cifar_garbage_and_missing(tmp_path: Path) -> None:
    with pytest.raises(VitcError, match="no CIFAR-10 batches"):
        load_dataset("cifar10", "train", data_dir=tmp_path)
    (tmp_path / "test_batch").write_bytes(b"\x80\x02not a pickle")
    with pytest.raises(VitcError, match="not a valid CIFAR-10 pickle"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


# ---------------------------------------------------------------- image folders


def _save(path: Path, arr: np.ndarray, mode: str | None = None, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    im.save(path, format=fmt)


def _folder(root: Path, splits: tuple[str, ...] = ("train", "val")) -> Path:
    rng = np.random.default_rng(0)
    for split in splits:
        _save(root / split / "cat" / "rgb.png", rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
        _save(root / split / "cat" / "grey.png", rng.integers(0, 256, (50, 30), dtype=np.uint8))
        _save(root / split / "cat" / "photo.jpg", rng.integers(0, 256, (33, 33, 3), dtype=np.uint8))
        _save(root / split / "dog" / "rgba.png", rng.integers(0, 256, (20, 20, 4), dtype=np.uint8))
        _save(root / split / "dog" / "palette.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), mode="P")
        _save(root / split / "dog" / "deep.png", np.full((16, 16), 65535, dtype=np.uint16))
        (root / split / "dog" / ".DS_Store").write_bytes(b"junk")  # hidden: ignored
        (root / split / ".hidden_class").mkdir(exist_ok=True)
    return root


def test_imagefolder_loads_all_modes(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    d = load_dataset("imagefolder", "train", data_dir=root, image_size=24, crop_pct=0.875)
    assert d.class_names == ["cat", "dog"]
    assert d.images.shape == (6, 3, 24, 24) and d.images.dtype == torch.uint8
    assert d.labels.tolist() == [0, 0, 0, 1, 1, 1]
    deep = d.images[3]  # dog/deep.png: 16-bit full scale -> white
    assert int(deep.min()) == 255
    grey = d.images[0]  # cat/grey.png: channels equal
    assert torch.equal(grey[0], grey[1])
    test = load_dataset("imagefolder", "test", data_dir=root, image_size=24)  # no test/: falls back to val
    assert len(test) == 6
    assert load_dataset("imagefolder", "val", data_dir=root, image_size=8, in_chans=1).images.shape == (6, 1, 8, 8)


def test_one_crop_pct_default_everywhere() -> None:
    """Issue 23: the registry, Preprocess and both loaders default to the one constant (timm's 0.875), not 1.0."""
    import dataclasses
    import inspect

    from vitc.artifacts.preprocess import DEFAULT_CROP_PCT, Preprocess
    from vitc.data.stream import SampleTransform
    from vitc.models._registry import ModelCfg

    assert DEFAULT_CROP_PCT == 0.875
    assert inspect.signature(load_dataset).parameters["crop_pct"].default == DEFAULT_CROP_PCT
    for record in (SampleTransform, Preprocess, ModelCfg):
        assert {f.name: f.default for f in dataclasses.fields(record)}["crop_pct"] == DEFAULT_CROP_PCT, record


def test_imagefolder_16bit_scaling(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    _save(root / "train" / "cat" / "half.png", np.full((8, 8), 32896, dtype=np.uint16))  # 128 * 257
    d = load_dataset("imagefolder", "train", data_dir=root, image_size=8)
    assert int(d.images[1].float().mean().round()) == 128  # sorted: grey, half, photo, rgb


def _expect(root: Path, match: str, split: str = "train") -> None:
    with pytest.raises(VitcError, match=match):
        load_dataset("imagefolder", split, data_dir=root, image_size=8)


def test_imagefolder_errors_name_the_path(tmp_path: Path) -> None:
    _expect(tmp_path / "nope", "missing folder .*nope")
    root = _folder(tmp_path / "a", splits=("train",))
    _expect(root, r"missing folder .*a/val", split="val")
    root = _folder(tmp_path / "b")
    (root / "train" / "bird").mkdir()
    _expect(root, r"class folder .*b/train/bird has no images")
    root = _folder(tmp_path / "c")
    (root / "train" / "cat" / "zero.png").write_bytes(b"")
    _expect(root, r"c/train/cat/zero.png is empty")
    root = _folder(tmp_path / "d")
    (root / "train" / "cat" / "notes.png").write_text("not an image")
    _expect(root, r"cannot read image .*d/train/cat/notes.png")
    root = _folder(tmp_path / "e")
    _save(root / "val" / "cow" / "x.png", np.zeros((4, 4), np.uint8))
    _expect(root, r"same class folders.*extra: cow", split="val")


def test_a_plain_folder_of_class_folders_is_measured_whole_and_never_trained_on(tmp_path: Path) -> None:
    """Export's held-out set and inspect read val or test through here, which refused class folders without
    train/ val/ test/ ("missing folder .../train") where `vitc eval` reads them whole. Now val and test are the
    whole folder, labelled by the recorded names (the model's) as eval labels it; train is still refused."""
    from vitc.data.files import check_data_dir, detect_kind

    plain = _folder(tmp_path / "plain", splits=("",))  # plain/cat, plain/dog
    split = load_dataset("imagefolder", "train", data_dir=_folder(tmp_path / "split"), image_size=24)  # same photos
    for name in ("val", "test"):
        d = load_dataset("imagefolder", name, data_dir=plain, image_size=24, recorded=["bird", "cat", "dog"])
        assert d.split == "all" and d.class_names == ["bird", "cat", "dog"], (d.split, d.class_names)
        assert d.labels.tolist() == [1, 1, 1, 2, 2, 2] and torch.equal(d.images, split.images)
    d = load_dataset("imagefolder", "test", data_dir=plain, image_size=8)  # no names recorded: the folder's
    assert d.class_names == ["cat", "dog"] and d.labels.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(VitcError, match="class folders the model does not know: dog"):
        load_dataset("imagefolder", "test", data_dir=plain, image_size=8, recorded=["cat", "fox"])
    _expect(plain, r"missing folder .*plain/train")
    assert detect_kind(plain, measured=True) == "imagefolder"
    with pytest.raises(VitcError, match="holds class folders but no train/ and val/"):
        check_data_dir("imagefolder", str(plain))  # what `vitc train` checks


def test_a_folder_of_val_alone_is_measured_as_eval_reads_it_and_never_trained_on(tmp_path: Path) -> None:
    """A validation split copied alone (val/<class>/, no train/): `vitc eval` read it, export's held-out set and
    inspect refused it, and `vitc train` said it held "class folders but no train/ and val/". Val and test now
    read val/ (test falls back to it) labelled by the recorded names; training says what is missing."""
    from vitc.data.files import check_data_dir, detect_kind

    held = _folder(tmp_path / "held", splits=("val",))
    split = load_dataset("imagefolder", "train", data_dir=_folder(tmp_path / "split"), image_size=24)  # same photos
    for name in ("val", "test"):
        d = load_dataset("imagefolder", name, data_dir=held, image_size=24, recorded=["bird", "cat", "dog"])
        assert d.split == "val" and d.labels.tolist() == [1, 1, 1, 2, 2, 2] and torch.equal(d.images, split.images)
    _expect(held, r"missing folder .*held/train")
    assert detect_kind(held, measured=True) == "imagefolder"
    with pytest.raises(VitcError, match=r"held has val/ but no train/: vitc trains on"):
        check_data_dir("imagefolder", str(held))


# ---------------------------------------------------------------- batching


def test_batches_are_deterministic_and_cover() -> None:
    a = list(batches(10, 4, make_generator(3, epoch=1)))
    b = list(batches(10, 4, make_generator(3, epoch=1)))
    assert [len(x) for x in a] == [4, 4, 2]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert sorted(torch.cat(a).tolist()) == list(range(10))
    assert not torch.equal(torch.cat(a), torch.cat(list(batches(10, 4, make_generator(3, epoch=2)))))
    assert [len(x) for x in batches(10, 4, make_generator(0), drop_last=True)] == [4, 4]
    assert torch.cat(list(batches(5, 2, shuffle=False))).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("n", "world"), [(10, 3), (12, 4), (2, 4), (7, 1)])
def test_shard_equal_lengths_and_covers(n: int, world: int) -> None:
    perm = torch.randperm(n, generator=make_generator(0))
    parts = [shard(perm, r, world) for r in range(world)]
    assert len({len(p) for p in parts}) == 1
    assert set(torch.cat(parts).tolist()) == set(range(n))
    assert len(torch.cat(parts)) == -(-n // world) * world
    ranked = [list(batches(n, 2, make_generator(5), rank=r, world_size=world)) for r in range(world)]
    assert set(torch.cat([torch.cat(r) for r in ranked]).tolist()) == set(range(n))
    with pytest.raises(VitcError):
        shard(perm, world, world)


def test_an_in_memory_split_is_shared_out_to_the_ddp_processes() -> None:
    from vitc.data.feed import set_batches

    data = load_dataset("digits", "val", image_size=8)
    shares = [list(set_batches(data, rank, 4)) for rank in range(4)]
    for rank, batches_of_rank in enumerate(shares):
        assert torch.equal(torch.cat([y for _, y, _ in batches_of_rank]), data.labels[rank::4])
    assert sum(len(y) for share in shares for _, y, _ in share) == len(data)
    assert torch.equal(torch.cat([y for _, y, _ in set_batches(data)]), data.labels)  # one process: all, in order


def test_an_image_folder_keeps_its_training_photos_whole(tmp_path: Path) -> None:
    """Training's crops are cut from the whole photo, as timm's: the train split is kept whole (squashed
    to size / crop_pct with each photo's size beside it), where the evaluation's centre crop lost the
    borders (a photo whose outer fifth is red: about 80% of the red never reached a training crop)."""
    from PIL import Image

    photo = np.zeros((60, 80, 3), dtype=np.uint8)
    photo[:, :, 1] = 200  # green, with a red border a fifth of each side wide
    photo[:12], photo[-12:], photo[:, :16], photo[:, -16:] = (255, 0, 0), (255, 0, 0), (255, 0, 0), (255, 0, 0)
    for split in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.fromarray(photo).save(tmp_path / split / name / "0.png")
    whole = load_dataset("imagefolder", "train", data_dir=tmp_path, image_size=28, crop_pct=0.875, whole=True)
    val = load_dataset("imagefolder", "val", data_dir=tmp_path, image_size=28, crop_pct=0.875)
    assert whole.images.shape == (2, 3, 32, 32) and whole.sizes.tolist() == [[60, 80], [60, 80]]
    assert val.images.shape == (2, 3, 28, 28) and val.sizes is None
    red = lambda x: (x[:, 0].float() > 200) & (x[:, 1].float() < 50)  # noqa: E731
    assert abs(red(whole.images).float().mean() - (1 - 36 * 48 / (60 * 80))) < 0.05  # the border's 64% of the photo
    assert red(val.images).float().mean() < 0.4  # the centre crop keeps half of it
    assert whole.subset([1]).sizes.tolist() == [[60, 80]]
