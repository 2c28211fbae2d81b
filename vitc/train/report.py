"""What a run leaves for humans: metrics as JSON lines, loss/accuracy curves and confusion matrices as PNG."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitc._io import atomic_write, json_line
from vitc._lazy import lazy_import, pyplot
from vitc._run_layout import RunLayout
from vitc._text import printable

if TYPE_CHECKING:
    from vitc.train.config import TrainConfig


def write_metrics(history: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Rewrite metrics.jsonl from the history (after a resume it matches the uninterrupted run)."""
    with atomic_write(path) as tmp:
        tmp.write_text("".join(json_line(row) for row in history))


def write_history(
    history: list[dict[str, Any]],
    folder: str | os.PathLike[str],
    cfg: TrainConfig,
    schedule: Sequence[tuple[float, float]],
) -> None:
    """metrics.jsonl and curves.png of the run folder from the saved history, on --resume (a stop between an
    epoch's logs and its resume state left rows it is past)."""
    write_metrics(history, RunLayout(Path(folder)).metrics)
    draw_curves(history, folder, cfg, schedule)


def draw_curves(
    history: list[dict[str, Any]],
    folder: str | os.PathLike[str],
    cfg: TrainConfig,
    schedule: Sequence[tuple[float, float]],
) -> None:
    """The run folder's curves.png: `plot_curves` titled and labelled by the run's config."""
    plot_curves(history, RunLayout(Path(folder)).curves, run_title(cfg), schedule, training_objective(cfg))


# curves.png is drawn at an epoch's end once this many seconds have passed since training started or the figure was
# last drawn: every epoch of a run whose epochs take longer; drawn every epoch (0.2-0.5 s each), a run of short
# epochs spent longer on the figure than training
CURVES_EVERY_S = 10.0


@dataclass
class CurvesClock:
    """When a run draws curves.png (`CURVES_EVERY_S`): at an epoch's end when due, at the run's last epoch, and
    when the run stops with epochs the figure lacks; --resume redraws it whole (`write_history`). metrics.jsonl and
    TensorBoard's scalars have every epoch at its end."""

    drawn_at: float = field(default_factory=time.monotonic)  # when last drawn, or training's start
    rows: int = 0  # the history rows the figure shows

    def due(self, last: bool) -> bool:
        return last or time.monotonic() - self.drawn_at >= CURVES_EVERY_S

    def lacks(self, history: list[dict[str, Any]]) -> bool:
        return self.rows != len(history)

    def draw(
        self,
        history: list[dict[str, Any]],
        folder: str | os.PathLike[str],
        cfg: TrainConfig,
        schedule: Sequence[tuple[float, float]],
    ) -> None:
        draw_curves(history, folder, cfg, schedule)
        self.drawn_at, self.rows = time.monotonic(), len(history)


def run_title(cfg: TrainConfig) -> str:
    """What curves.png is of: the model (and the weights it started from), the data and its size, the run."""
    model = cfg.model.name or "?"
    start = f" from {cfg.model.pretrained}" if cfg.model.pretrained else ""
    data = cfg.data.dir if cfg.data.name == "imagefolder" and cfg.data.dir else cfg.data.name or "?"
    size = f" at {cfg.data.image_size}×{cfg.data.image_size} px" if cfg.data.image_size else ""
    return f"{model}{start} on {data}{size}, run '{cfg.run_name}'"


def training_objective(cfg: TrainConfig) -> str:
    """What the train loss adds to the validation's plain cross-entropy (it is higher for these, not worse)."""
    parts = [f"{name} {value:g}" for name, value in (
        ("label smoothing", cfg.optim.label_smoothing), ("mixup", cfg.aug.mixup), ("cutmix", cfg.aug.cutmix)
    ) if value]  # fmt: skip
    return ", ".join(parts)


def lr_schedule(
    total_steps: int,
    warmup_steps: int,
    base_lr: float,
    min_lr: float,
    steps_per_epoch: int,
    points: int = 200,
    warmup_lr: float | None = None,
) -> list[tuple[float, float]]:
    """The run's planned learning rate as (epoch, lr) pairs, for the curves figure."""
    from vitc.train.optim import lr_at

    every = max(1, total_steps // points)
    steps = [*range(0, total_steps, every), total_steps - 1]
    return [((s + 1) / steps_per_epoch, lr_at(s, total_steps, warmup_steps, base_lr, min_lr, warmup_lr)) for s in steps]


def plot_curves(
    history: list[dict[str, Any]],
    path: str | os.PathLike[str],
    title: str = "",
    schedule: Sequence[tuple[float, float]] = (),
    objective: str = "",
) -> None:
    """curves.png: `curves_figure` saved."""
    fig = curves_figure(history, title, schedule, objective)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    pyplot().close(fig)


def curves_figure(
    history: list[dict[str, Any]], title: str = "", schedule: Sequence[tuple[float, float]] = (), objective: str = ""
) -> Any:
    """Loss, validation top-1 and the learning rate per epoch, as timm's and Ultralytics' results figures: `title`
    (`run_title`) above, each axis with its unit, train and val named in the legends, the best epoch (the one
    best.safetensors holds) a dotted line in every panel and a star on top-1; markers so one epoch shows.
    `objective`: what the train loss adds to cross-entropy (`training_objective`), said in its legend."""
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    dots = {"marker": "o", "ms": 3 if len(history) > 30 else 5}
    fig, (losses, top1, lr) = plt.subplots(1, 3, figsize=(13, 4.6))
    trained = "train: mean over the epoch's steps" + (f"\n({objective})" if objective else "")
    losses.plot(epochs, [row["train_loss"] for row in history], label=trained, **dots)
    losses.plot(epochs, [row["val_loss"] for row in history], label="val: after the epoch", **dots)
    losses.set_title("loss")
    losses.set_ylabel("cross-entropy (nats)")
    # not clipped: a top-1 of 100% (or 0%) sits on the axis' edge, and its marker is drawn whole
    top1.plot(epochs, [row["val_top1"] for row in history], color="tab:green", label="val top-1", clip_on=False,
              **dots)  # fmt: skip
    best = max(history, key=lambda row: row["val_top1"])
    top1.plot([best["epoch"]], [best["val_top1"]], marker="*", ms=14, color="tab:red", ls="none", clip_on=False,
              label=f"best: {best['val_top1']:.2f}% at epoch {best['epoch']} (best.safetensors)")  # fmt: skip
    top1.set_title("validation top-1", pad=10)  # clear of a star drawn at 100%
    top1.set_ylabel("top-1 accuracy (%)")
    low, high = top1.get_ylim()  # an accuracy is within 0..100%: a flat 100% autoscaled to 105 read as above it
    top1.set_ylim(max(low, 0.0), min(high, 100.0))
    if schedule:
        lr.plot([e for e, _ in schedule], [v for _, v in schedule], color="0.6", lw=1, label="planned, per step")
    lr.plot(epochs, [row["lr"] for row in history], color="tab:purple", ls="none", label="at the epoch's end", **dots)
    lr.set_title("learning rate")
    lr.set_ylabel("learning rate")
    integer = lazy_import("matplotlib.ticker").MaxNLocator(integer=True)
    for ax in (losses, top1, lr):
        marked = f"epoch {best['epoch']}: the best val top-1" if ax is losses else None
        ax.axvline(best["epoch"], color="0.5", ls=":", lw=1, label=marked)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(integer)
        ax.set_xlim(0, max(max(epochs), schedule[-1][0] if schedule else 0) + 0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)  # below: no data hidden
    if title:
        fig.suptitle(_fit(fig, printable(title).replace("$", r"\$"), 12), fontsize=12)  # `$`: not math
    fig.tight_layout()
    return fig


LABEL_CHARS = 30  # a class name longer than this is drawn cut at its end ("…"); the JSON keeps it whole
COUNTED_CLASSES = 60  # above this many classes the counts are not drawn in the cells and few classes are named
NAMED_TICKS = 40  # tick labels at most, per axis, above COUNTED_CLASSES
MAX_INCHES = 24.0  # the figure's largest side: 2,400 px at 100 dpi (300 classes made 13,750 px, 6 GB, 66 s)
FALLBACK_FONTS = (  # tried in order for glyphs DejaVu Sans lacks (matplotlib >= 3.6 falls back per glyph)
    "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR", "Source Han Sans",
    "Source Han Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "Microsoft YaHei",
    "Yu Gothic", "MS Gothic", "Hiragino Sans", "PingFang SC", "Apple SD Gothic Neo", "Malgun Gothic",
    "Noto Sans", "Arial Unicode MS",
)  # fmt: skip


def plot_confusion(
    matrix: Any,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    title: str = "",
    other_column: bool = False,
    data: str = "",
) -> None:
    """A confusion matrix of counts, true classes on rows; `other_column`: the last column counts predictions
    of classes outside `class_names`. Each cell is coloured by its share of its row (the true class's recall
    on the diagonal), so a small class's cells read as a big one's; the count is its text, in type as large
    as the cells allow. The title is `title` (the model) over "on `data`", a long path cut from the left.

    Sized from the longest name as drawn, names over LABEL_CHARS cut with "…"; above COUNTED_CLASSES classes
    no counts and only some names, in a figure of at most MAX_INCHES a side. Names and title are drawn as
    `printable` shows them (a Latin-1 folder name held as surrogates is refused by matplotlib's text), a
    character no installed font has as its escape (\\u98db), and matplotlib's missing-glyph warnings are held."""
    plt, numpy = pyplot(), lazy_import("numpy")
    counts = numpy.asarray(matrix, dtype=float).reshape(len(class_names), -1)
    rows, cols = counts.shape
    with _font_fallback() as drawable:
        names = [drawable(name) for name in _labels([printable(name) for name in class_names])]  # cut, then escaped
        ticks = _named_ticks(cols)
        fig = plt.figure(constrained_layout=True, dpi=100)
        ax = fig.add_subplot()
        totals = counts.sum(axis=1, keepdims=True)
        share = numpy.divide(counts, totals, out=numpy.zeros_like(counts), where=totals > 0)
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        xnames = [*names, "other"][:cols]
        rotate = any(len(name) > 6 for name in xnames)
        ax.set_xticks(ticks)  # then the labels apart: set_xticks(ticks, labels) needs matplotlib 3.5 (apt's is 3.1)
        ax.set_xticklabels([xnames[i] for i in ticks], rotation=90 if rotate else 0)
        ax.set_yticks([i for i in ticks if i < rows])
        ax.set_yticklabels([names[i] for i in ticks if i < rows])
        ax.set_xlabel('predicted ("other": a class not among the rows, or NaN)' if other_column else "predicted")
        ax.set_ylabel("true")
        bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
        bar.set_label("share of true class")
        bar.ax.yaxis.set_major_formatter(lazy_import("matplotlib.ticker").PercentFormatter(xmax=1))
        width, height = _confusion_inches(fig, ax, rows, cols)
        fig.set_size_inches(width, height)
        if rows <= COUNTED_CLASSES:
            size = 13 if rows <= 10 else 9 if rows <= 20 else 7
            for i in range(rows):
                for j in range(cols):
                    colour = "white" if share[i, j] > 0.55 else "black"
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=size, color=colour)
            what = "counts, coloured by share of true class"
        else:
            every = ticks[1] - ticks[0] if len(ticks) > 1 else 1
            what = f"{rows} classes, one in {every} named; colour: share of true class (counts in the JSON)"
        lines = [drawable(printable(title)), f"on {drawable(printable(data))}" if data else "", what]
        fig.suptitle("\n".join(_fit(fig, line) for line in lines if line), fontsize=10)
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)


def _named_ticks(count: int) -> list[int]:
    """Every index up to COUNTED_CLASSES, then every k-th so that at most NAMED_TICKS are named."""
    every = 1 if count <= COUNTED_CLASSES else -(-count // NAMED_TICKS)
    return list(range(0, count, every))


def _labels(names: list[str]) -> list[str]:
    """Names over LABEL_CHARS cut at their end with "…"; names that come out the same get their index."""
    cut = [name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…" for name in names]
    return [f"{i}: {name}" if cut.count(name) > 1 else name for i, name in enumerate(cut)]


def _confusion_inches(fig: Any, ax: Any, rows: int, cols: int) -> tuple[float, float]:
    """The figure's size: cells of a side that leaves room for the counts (a fixed square above
    COUNTED_CLASSES), plus the tick labels as measured, the axis labels, colour bar and a three-line title."""
    renderer = fig.canvas.get_renderer()

    def widest(labels: Any, side: str) -> float:
        extents = [label.get_window_extent(renderer) for label in labels if label.get_text()]
        return max((getattr(e, side) for e in extents), default=0.0) / fig.dpi

    cell = 0.7 if rows <= 10 else 0.45 if rows <= 30 else 0.3
    grid_w, grid_h = (cell * cols, cell * rows) if rows <= COUNTED_CLASSES else (14.0, 14.0 * rows / cols)
    left = widest(ax.get_yticklabels(), "width") + 0.5  # names and "true"
    below = widest(ax.get_xticklabels(), "height") + 0.5  # names (rotated: their length) and "predicted"
    width = min(MAX_INCHES, max(5.0, left + grid_w + 1.4))  # the colour bar and its label
    height = min(MAX_INCHES, max(4.0, below + grid_h + 0.9))  # the title's lines
    return width, height


def _fit(fig: Any, line: str, fontsize: float = 10) -> str:
    """`line` in the figure's width as drawn: a path in it cut from the left to its last folders ("…/test"),
    what still is too long cut at its end."""
    probe = fig.text(0, 0, "", fontsize=fontsize)
    renderer, room = fig.canvas.get_renderer(), fig.bbox.width - 0.3 * fig.dpi

    def fits(text: str) -> bool:
        probe.set_text(text)
        return bool(probe.get_window_extent(renderer).width <= room)

    words = line.split(" ")
    for k, word in sorted(enumerate(words), key=lambda item: -len(item[1])):
        parts = word.split("/")
        while not fits(" ".join(words)) and len(parts) > 1 + (parts[0] == "…"):
            parts = ["…", *parts[2:]] if parts[0] == "…" else ["…", *parts[1:]]
            words[k] = "/".join(parts)
    line = " ".join(words)
    while not fits(line) and len(line) > 2:
        line = line[:-2] + "…"
    probe.remove()
    return line


@contextlib.contextmanager
def _font_fallback() -> Iterator[Callable[[str], str]]:
    """In the block: text falls back from DejaVu Sans to the installed fonts of FALLBACK_FONTS glyph by glyph,
    and matplotlib's "Glyph 39131 missing from font(s)" warnings are held back; yields what draws a text: each
    character no font here has as its escape (\\u98db, not an empty box), a `$` as itself (not math)."""
    import warnings

    matplotlib, font_manager = lazy_import("matplotlib"), lazy_import("matplotlib.font_manager")
    installed = {font.name for font in font_manager.fontManager.ttflist}
    families = ["DejaVu Sans", *(name for name in FALLBACK_FONTS if name in installed)]
    covered = _glyphs(families)

    def drawable(text: str) -> str:
        out = (c if ord(c) in covered or not c.isprintable() else c.encode("unicode_escape").decode() for c in text)
        return "".join(out).replace("$", r"\$")

    with warnings.catch_warnings(), matplotlib.rc_context({"font.family": families}):
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from")
        yield drawable


def _glyphs(families: Sequence[str]) -> frozenset[int]:
    """The code points the fonts of `families` draw, together."""
    font_manager, ft2font = lazy_import("matplotlib.font_manager"), lazy_import("matplotlib.ft2font")
    codes: set[int] = set()
    for family in families:
        with contextlib.suppress(Exception):  # a font file that cannot be read draws nothing
            found = font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
            codes.update(ft2font.FT2Font(found).get_charmap())
    return frozenset(codes)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class TensorBoardLog:
    """Scalars per step and per epoch and the run's figures as images, for `tensorboard --logdir RUN`."""

    SAMPLE = 16  # validation images the locality figures are measured on

    def __init__(self, folder: str | os.PathLike[str], purge_step: int | None = None) -> None:
        """`purge_step`: TensorBoard hides every record of the folder, of every tag, at that step or later that
        was written before this writer (a stopped run's records past its resume point)."""
        lazy_import("tensorboard")  # SummaryWriter needs it: a VitcError naming the extra when missing
        writer = lazy_import("torch.utils.tensorboard").SummaryWriter
        self.writer = writer(log_dir=str(folder), purge_step=purge_step)
        self.sample: Any = None  # the first validation images, kept by tap()
        self._layout_written = False

    def tap(self, batches: Iterable[tuple[Any, Any, Any]]) -> Iterator[tuple[Any, Any, Any]]:
        """Pass (images, labels, notes) batches through, keeping the first SAMPLE images once."""
        for batch in batches:
            if self.sample is None and len(batch[0]):
                self.sample = batch[0][: self.SAMPLE].clone()
            yield batch

    def step(self, step: int, **scalars: float) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(f"step/{name}", value, step)

    def epoch(self, row: dict[str, Any], figures: Sequence[str | os.PathLike[str]] = ()) -> None:
        """The epoch's metrics row as scalars, each PNG in `figures` as an image; flushed (a kill loses nothing)."""
        for name, value in row.items():
            if name != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(f"epoch/{name}", value, row["epoch"])
        self.images(figures, row["epoch"])

    def images(self, figures: Sequence[str | os.PathLike[str]], step: int, prefix: str = "") -> None:
        """Each PNG as an image named after its file, at `step`; flushed."""
        numpy, image = lazy_import("numpy"), lazy_import("PIL.Image")
        for path in figures:
            with image.open(path) as png:
                pixels = numpy.asarray(png.convert("RGB"))
            self.writer.add_image(prefix + Path(path).stem, pixels, step, dataformats="HWC")
        self.writer.flush()

    def locality(self, model: Any, images: Any, step: int, figures: bool = True) -> None:
        """`vitc inspect`'s measures of `model` on `images` as scalars (each layer's mean attention distance, each
        GPSA head's gate: ConViT's figure of the gates through training) and, with `figures`, its figures as
        images. Measured where the model is, in full precision and with every training flag given back: a CPU
        copy kept the GPU waiting on the CPU's forward pass of the whole model every epoch."""
        from vitc._modules import eval_mode
        from vitc.analysis.locality import analyse

        torch = lazy_import("torch")
        weight = next(model.parameters())
        with eval_mode(model), torch.autocast(weight.device.type, enabled=False):
            report = analyse(model, images.to(weight.device, weight.dtype))
        self._locality_scalars(report, step)
        if figures:
            self._locality_figures(report, step)
        self.writer.flush()

    def _locality_scalars(self, report: Any, step: int) -> None:
        """One chart per GPSA layer with a line per head (TensorBoard's custom scalars), written once."""
        gate_tags = {name: [f"locality/gate/{name}/h{h}" for h in range(len(g))] for name, g in report.gates.items()}
        if gate_tags and not self._layout_written:
            charts = {name: ["Multiline", [f"^locality/gate/{re.escape(name)}/h"]] for name in gate_tags}
            self.writer.add_custom_scalars({"GPSA gates σ(λ) per head": charts})
            self._layout_written = True
        for name, row in zip(report.layers, report.distance):
            self.writer.add_scalar(f"locality/distance/{name}", sum(row) / len(row), step)
        for name, tags in gate_tags.items():
            for tag, value in zip(tags, report.gates[name]):
                self.writer.add_scalar(tag, value, step)

    def _locality_figures(self, report: Any, step: int) -> None:
        import tempfile

        from vitc.analysis import figures

        with tempfile.TemporaryDirectory() as folder:
            self.images(figures.write_all(report, Path(folder)), step, prefix="locality/")

    def close(self) -> None:
        self.writer.close()

    @contextlib.contextmanager
    def moving(self, folder: str | os.PathLike[str]) -> Iterator[None]:
        """The run folder renamed in the block (a --force run's `.NAME.new/` becoming NAME): the writer, which
        appends by path, is closed before and goes on in `folder` after, in a new event file there."""
        self.writer.close()
        yield
        self.writer = lazy_import("torch.utils.tensorboard").SummaryWriter(log_dir=str(folder))
