"""What the training loop sees of its data, from memory or streamed: batches of uint8 images.

Both paths take the same index batches (a permutation seeded by (seed, epoch), sharded per rank, its
images repeated under aug.repeats: see `vitc.data.sampling.epoch_share`) and yield (uint8 images,
labels, reasons for dropped samples). The in-memory path indexes tensors; the streaming path hands
the same indices to one pool of persistent DataLoader workers, which serves train, val and test.
"""

from __future__ import annotations

import ctypes
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from vitc.artifacts.preprocess import DEFAULT_CROP_MODE, eval_resize
from vitc.data.datasets import ImageSet, _to_chans, load_dataset, stratified_subset
from vitc.data.files import listing_digest, split_listing, split_read
from vitc.data.stream import (
    BAD_IMAGE_CHOICES,
    SampleTransform,
    StreamSet,
    collate,
    decoded_bytes,
    open_source,
    use_stream,
)
from vitc.errors import VitcError, first_line

Batch = tuple[torch.Tensor, torch.Tensor, list[str]]
WholeBatch = tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor]  # + each whole photo's (height, width)
EVAL_BATCH = 256
_M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)


class MemoryFeed:
    """Data sets decoded once at the model's input size (see vitc.data.datasets). An image folder's
    unreadable files are left out when loading (on_bad_image="skip"), each reported once; the train
    set's count is what every epoch skipped (`skipped_per_epoch`, logged in metrics.jsonl). With
    `pin_memory` (training on CUDA) a train batch is gathered straight into pinned memory, from which
    the copy to the GPU runs asynchronously."""

    streaming = False

    def __init__(
        self,
        name: str,
        fraction: float,
        seed: int,
        load: dict[str, Any],
        report: Callable[[str], None] = print,
        pin_memory: bool = False,
    ) -> None:
        self.name, self.load, self.report, self.pin_memory = name, load, report, pin_memory
        self.bad: set[str] = set()  # reasons, one per unreadable file, over train, val and test
        # an image folder's photos are kept whole for training's crops (digits and CIFAR are whole already)
        self.train_set = self._load("train", fraction=fraction, seed=seed, whole=name == "imagefolder")
        self.whole_images = self.train_set.sizes is not None
        self.skipped_per_epoch = len(self.train_set.skipped)
        self.sets = {"val": self._load("val")}
        self.class_names = self.train_set.class_names

    def _load(self, split: str, **kwargs: Any) -> ImageSet:
        data = load_dataset(self.name, split, **self.load, **kwargs)
        for reason in data.skipped:
            if reason not in self.bad:  # once per file: a folder without test/ loads val again for the test
                self.report(f"skipped: {reason}")
        self.bad.update(data.skipped)
        return data

    def __len__(self) -> int:
        return len(self.train_set)

    @property
    def val_images(self) -> int:
        return len(self.sets["val"])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def train_batches(
        self, order: list[torch.Tensor], epoch: int, copies: list[torch.Tensor] | None = None
    ) -> Iterator[Batch | WholeBatch]:
        """Index batches of the train set; whole photos come with their sizes (TrainAugment's `sizes`). The
        copy numbers (aug.repeats) change nothing here: every row draws its own augmentation in the batch."""
        images, sizes = self.train_set.images, self.train_set.sizes
        for idx in order:
            if self.pin_memory:
                out = torch.empty((len(idx), *images.shape[1:]), dtype=images.dtype, pin_memory=True)
                batch = torch.index_select(images, 0, idx, out=out), self.train_set.labels[idx], []
            else:
                batch = images[idx], self.train_set.labels[idx], []
            yield batch if sizes is None else (*batch, sizes[idx])

    def eval_batches(self, split: str, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """The split in order; under DDP this process's share (every world_size-th image from rank)."""
        if split not in self.sets:
            self.sets[split] = self._load(split)
        yield from set_batches(self.sets[split], rank, world_size)

    def close(self) -> None:
        pass


class StreamFeed:
    """Files (or CIFAR-10's stored arrays) read per sample by `workers` persistent processes."""

    streaming = True
    whole_images = False  # each sample is cropped from its whole photo in a worker

    def __init__(
        self,
        sources: dict[str, Any],
        transform: SampleTransform,
        *,
        workers: int,
        pin_memory: bool,
        in_chans: int = 3,
        on_bad_image: str = "skip",
        report: Callable[[str], None] = print,
    ) -> None:
        if on_bad_image not in BAD_IMAGE_CHOICES:
            raise VitcError(f"data.on_bad_image must be one of {', '.join(BAD_IMAGE_CHOICES)}, got {on_bad_image!r}")
        self.on_bad_image, self.report = on_bad_image, report
        self.bad: set[str] = set()  # reasons, one per unreadable file, over the feed's life: train and evaluation
        self.skipped = 0  # samples dropped over the feed's life (a bad file counts once per pass)
        self.skipped_per_epoch = 0  # counted per batch as they are met
        self.sources = sources
        self.class_names = next(iter(sources.values())).class_names  # every split names the same classes
        self.in_chans = in_chans
        self.plan = _Plan()
        self.loader = torch.utils.data.DataLoader(
            StreamSet(sources, transform),
            batch_sampler=self.plan,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=pin_memory,
            persistent_workers=workers > 0,
            generator=torch.Generator(),  # the workers' base seed must not draw from the global RNG
            worker_init_fn=_init_worker,
        )

    def __len__(self) -> int:
        return len(self.sources["train"])

    @property
    def val_images(self) -> int:
        return len(self.sources["val"])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def train_batches(
        self, order: list[torch.Tensor], epoch: int, copies: list[torch.Tensor] | None = None
    ) -> Iterator[Batch]:
        """Index batches of the train set, each sample cropped and flipped in a worker by (epoch, index) and,
        under aug.repeats, its copy number (`copies`, beside `order`), so that an image's copies differ."""
        copies = copies or [torch.zeros_like(idx) for idx in order]
        self.plan.batches = [
            [("train", int(i), epoch, int(c)) for i, c in zip(idx, copy, strict=True)]
            for idx, copy in zip(order, copies, strict=True)
        ]
        return self._run()

    def eval_batches(self, split: str, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """The split in order; under DDP this process's share (every world_size-th image from rank)."""
        split = split if split in self.sources else "val"
        share = range(rank, len(self.sources[split]), world_size)
        starts = range(0, len(share), EVAL_BATCH)
        self.plan.batches = [[(split, i, -1, 0) for i in share[s : s + EVAL_BATCH]] for s in starts]
        return self._run()

    def _run(self) -> Iterator[Batch]:
        it = iter(self.loader)
        while True:
            try:
                images, labels, bad = next(it)
            except StopIteration:
                return
            except RuntimeError as exc:  # a worker killed (OOM killer, signal) or exited
                if "DataLoader worker" not in str(exc):
                    raise
                died = f"a data loader worker died ({first_line(exc)})"
                raise VitcError(f"{died}; the last resumable state is kept") from None
            for reason in bad:
                if self.on_bad_image == "stop":
                    raise VitcError(f"{reason} (data.on_bad_image=stop; =skip trains on without it)")
                if reason not in self.bad:  # once per file, not once per epoch
                    self.report(f"skipped: {reason}")
                self.bad.add(reason)
            self.skipped += len(bad)
            yield _to_chans(images, self.in_chans), labels, bad

    def close(self) -> None:
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self.loader._iterator = None


def set_batches(data: ImageSet, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
    """An in-memory set's evaluation batches, in order: all of it, or every world_size-th image from rank."""
    share = torch.arange(rank, len(data), world_size)
    for start in range(0, len(share), EVAL_BATCH):
        idx = share[start : start + EVAL_BATCH]
        yield data.images[idx], data.labels[idx], []


def _init_worker(_: int) -> None:
    """A worker's start: SIGTERM left to this process, which stops the workers itself, and a flat heap.

    A group's SIGTERM (GNU timeout, `kill -- -PGID`, systemd, Slurm) reached the workers too, which torch's
    handler lets end unless this process sent it; torch then raised 'DataLoader worker is killed by signal'
    in this process wherever it stood, a traceback where it was saving and saying `stopped by SIGTERM`."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _pin_mmap_threshold()


def _pin_mmap_threshold() -> None:
    """Keep a worker's memory flat over an epoch. glibc raises its mmap threshold each time a large
    block is freed, after which every batch (MBs) comes from the heap, which fragmentation keeps
    from shrinking: workers then grew by about one batch per batch served (docs/benchmarks.md).
    A fixed threshold (glibc's default, 128 KiB) keeps large blocks mmapped and returned on free."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to pin
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)


class _Plan(torch.utils.data.Sampler):
    """The batch sampler: the loop sets the batches before each pass, so persistent workers serve
    every epoch and every evaluation, and a resumed epoch starts at its next batch."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, int, int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[str, int, int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def open_feed(
    data: Any,
    *,
    size: int,
    crop_pct: float,
    in_chans: int,
    seed: int,
    crop_scale: tuple[float, float],
    flip_prob: float,
    workers: int,
    pin_memory: bool,
    index_cache: Path | None,
    report: Callable[[str], None] = print,
    main: bool = True,
    crop_mode: str = DEFAULT_CROP_MODE,
    train_interpolation: str = "random",
    recorded: Sequence[str] | None = None,
) -> tuple[MemoryFeed | StreamFeed, str]:
    """The feed for `data` (the config's data section) and one line saying which path and why. Under DDP
    every process loads an in-memory set whole, and only the `main` one names its unreadable files; a
    streamed set's shares are each process's own, which each names. An image folder's classes keep the
    `recorded` order of a resumed run (its head rows and sample order follow it) when they are its names."""
    whole_set_report = report if main else _silent
    load = dict(data_dir=data.dir, image_size=size, crop_pct=crop_pct, crop_mode=crop_mode, in_chans=in_chans)
    load["recorded"] = recorded
    load["on_bad_image"] = data.on_bad_image
    if data.name == "digits":
        if data.stream == "stream":
            raise VitcError("data.stream=stream needs cifar10 or imagefolder (digits always fit in memory)")
        return MemoryFeed(data.name, data.fraction, seed, load, whole_set_report, pin_memory), "data: in memory"
    if data.stream == "memory":
        note = "data: in memory (data.stream=memory)"
        return MemoryFeed(data.name, data.fraction, seed, load, whole_set_report, pin_memory), note
    sources = {s: open_source(data.name, data.dir, s, index_cache, recorded) for s in ("train", "val")}
    train_side = eval_resize(size, crop_pct) if data.name == "imagefolder" else size  # whole photos, for crops
    decoded = decoded_bytes(len(sources["train"]), in_chans, train_side)
    decoded += decoded_bytes(len(sources["val"]), in_chans, size)
    if not use_stream(data.stream, decoded):
        note = f"data: in memory ({decoded / 2**20:.0f} MB decoded, within the 512 MB budget)"
        return MemoryFeed(data.name, data.fraction, seed, load, whole_set_report, pin_memory), note
    if data.fraction < 1.0:
        labels = torch.from_numpy(sources["train"].labels)
        sources["train"] = sources["train"].subset(stratified_subset(labels, data.fraction, seed).numpy())
    if final_split(data) == "test":
        sources["test"] = open_source(data.name, data.dir, "test", index_cache, recorded)
    transform = SampleTransform(
        size,
        crop_pct,
        seed,
        crop_scale,
        flip_prob=flip_prob,
        crop_mode=crop_mode,
        train_interpolation=train_interpolation,
    )
    why = "data.stream=stream" if data.stream == "stream" else f"{decoded / 2**20:.0f} MB decoded, over 512 MB"
    feed = StreamFeed(
        sources,
        transform,
        workers=workers,
        pin_memory=pin_memory,
        in_chans=in_chans,
        on_bad_image=data.on_bad_image,
        report=report,
    )
    by = f"{workers} worker process{'es' if workers > 1 else ''}" if workers else "the training process (run.workers=0)"
    return feed, f"data: streamed, decoded by {by} ({why})"


def _silent(_: str) -> None:
    pass


def eval_fingerprint(data: Any, feed: MemoryFeed | StreamFeed) -> dict[str, Any]:
    """What the processes of a multi-process run must have alike of its validation and test sets (vitc.train.agree):
    an image folder's split read for the test, and each split's number of images and a digest of their sorted
    names, from its listing (no image is read); CIFAR-10's and the digits' validation size, which the feed holds
    (their test sets are the fixed test_batch and the bundled digits, read only for the final test)."""
    if data.name != "imagefolder":
        return {"val images": feed.val_images}
    out: dict[str, Any] = {}
    for split in ("val", "test"):
        read, files = split_listing(Path(data.dir), split)
        if split == "test":
            out["test read from"] = f"{read}/"  # val/ where the folder has no test/
        out[f"{split} images"] = len(files)
        out[f"{split} file names (sha256 of the sorted list)"] = listing_digest(files)
    return out


def final_split(data: Any) -> str:
    """The split the final figure is on: "val" for an image folder without test/, else "test"."""
    return split_read(Path(data.dir), "test") if data.name == "imagefolder" else "test"
