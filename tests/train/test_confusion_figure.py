"""The confusion matrix PNG as a reader sees it, asserted on matplotlib's Figure: sized from the names as drawn,
titles inside the figure, a sane size for a thousand classes, CJK names never empty boxes, cells coloured by
their share of the true class (vitc.train.report.plot_confusion)."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib")

from vitc.train import report
from vitc.train.report import plot_confusion

LONG4 = [
    "a_very_long_class_name_for_testing_labels_overlap",
    "bird-of-paradise flower (Strelitzia reginae)",
    "Größe_Äpfel_süß_und_sauer",
    "red-eyed tree frog, Agalychnis callidryas",
]
BREEDS = ["golden_retriever", "labrador_retriever", "german_shepherd", "border_collie", "siberian_husky"]


class Drawn:
    """The figure plot_confusion saved: drawn (constrained layout done), its texts measured."""

    def __init__(self) -> None:
        self.fig: Any = None
        self.renderer: Any = None  # the Agg renderer that drew it (plt.close takes the canvas away)

    @property
    def ax(self) -> Any:
        return self.fig.axes[0]

    def texts(self) -> list[Any]:
        """Every text a reader sees: tick labels, axis labels, counts, the title, the colour bar's."""
        found = [t for ax in self.fig.axes for t in (*ax.get_xticklabels(), *ax.get_yticklabels(), *ax.texts)]
        found += [ax.xaxis.label for ax in self.fig.axes] + [ax.yaxis.label for ax in self.fig.axes]
        return [t for t in [*found, self.fig._suptitle] if t is not None and t.get_visible() and t.get_text()]


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> Iterator[Drawn]:
    import matplotlib.figure

    seen = Drawn()
    original = matplotlib.figure.Figure.savefig

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.fig = self
        if max(self.get_size_inches()) > 40:  # the old 300-class figure: 6 GB to draw; its size is the finding
            raise RuntimeError(f"a figure of {self.get_size_inches()} inches")
        original(self, *args, **kwargs)
        seen.renderer = self.canvas.get_renderer()

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    yield seen


def _inside(drawn: Drawn, text: Any) -> bool:
    box, fig = text.get_window_extent(drawn.renderer), drawn.fig
    return box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.width + 0.5 and box.y1 <= fig.bbox.height + 0.5


@pytest.mark.parametrize("names", [LONG4, BREEDS], ids=["long-names", "breeds"])
def test_few_classes_with_long_names_get_room(names: list[str], tmp_path: Path, drawn: Drawn) -> None:
    """Four names of 25-49 characters (and five dog breeds) left the heat map a ~10 px strip in a figure sized
    from the class count, the counts overprinting and the unrotated x labels smeared into one another."""
    matrix = [[6 if i == j else 0 for j in range(len(names))] for i in range(len(names))]
    plot_confusion(matrix, names, tmp_path / "cm.png", title="deit_micro", data="/tmp/rev45f/data4/test")
    fig, ax = drawn.fig, drawn.ax
    renderer = drawn.renderer
    xlabels = [t for t in ax.get_xticklabels() if t.get_text()]
    assert all(t.get_rotation() == 90 for t in xlabels)
    boxes = sorted((t.get_window_extent(renderer) for t in xlabels), key=lambda b: b.x0)
    assert all(a.x1 <= b.x0 for a, b in itertools.pairwise(boxes))  # side by side, none over another
    assert ax.get_window_extent(renderer).width >= 0.5 * fig.dpi * len(names)  # cells of half an inch at least
    assert all(len(t.get_text()) <= report.LABEL_CHARS for t in xlabels)
    assert "a_very_long_class_name_for_te…" in [t.get_text() for t in xlabels] or names is BREEDS
    outside = [t.get_text() for t in drawn.texts() if not _inside(drawn, t)]
    assert not outside
    assert max(fig.get_size_inches()) <= 12


def test_short_names_stay_level(tmp_path: Path, drawn: Drawn) -> None:
    plot_confusion([[3, 1], [0, 4]], ["cat", "dog"], tmp_path / "cm.png", title="m")
    assert {t.get_rotation() for t in drawn.ax.get_xticklabels()} == {0}


@pytest.mark.parametrize(
    "data, second",
    [
        ("cifar/test, the held-out set of /tmp/rev45f/exp12/c12", ("on cifar/test, the held-out set of ", "exp12/c12")),
        (
            "/mnt/storage/projects/2024/acme/datasets/photos/holdout_for_final_report",
            ("on …/", "/holdout_for_final_report"),
        ),
    ],
)
def test_title_names_model_over_data_inside_the_figure(
    data: str, second: tuple[str, str], tmp_path: Path, drawn: Drawn
) -> None:
    """An ONNX eval's title ended at "…the held-out set" and a deep --data-dir lost the model and the folder's
    last part, cut at the figure's edges: now the model on one line, the data on the next, a path cut from the left."""
    plot_confusion([[3, 1], [0, 4]], ["cat", "dog"], tmp_path / "cm.png", title="convit_micro (c12.onnx)", data=data)
    title = drawn.fig._suptitle
    lines = title.get_text().split("\n")
    assert lines[0] == "convit_micro (c12.onnx)" and "counts" in lines[-1]
    assert lines[1].startswith(second[0]) and lines[1].endswith(second[1])
    assert _inside(drawn, title)


@pytest.mark.parametrize("classes", [300, 1000])
def test_many_classes_make_a_sane_figure(classes: int, tmp_path: Path, drawn: Drawn) -> None:
    """300 classes made a 13,750 × 13,700 px PNG (66 s, 6 GB; Pillow refuses to open it): the figure is capped,
    cells carry no counts, a few classes are named, and the title says so."""
    matrix = [[5 if i == j else int(j == (i + 1) % classes) for j in range(classes)] for i in range(classes)]
    names = [f"n{i:08d} a class name" for i in range(classes)]
    plot_confusion(matrix, names, tmp_path / "cm.png", title="vit_base", data="/data/imagenet/val")
    fig, ax = drawn.fig, drawn.ax
    assert max(fig.get_size_inches()) <= report.MAX_INCHES
    assert not ax.texts
    assert 10 <= len(ax.get_xticklabels()) <= report.NAMED_TICKS and len(ax.get_yticklabels()) <= report.NAMED_TICKS
    assert f"{classes} classes" in fig._suptitle.get_text() and "counts in the JSON" in fig._suptitle.get_text()
    from PIL import Image

    with Image.open(tmp_path / "cm.png") as png:
        assert max(png.size) <= report.MAX_INCHES * 100


def test_a_name_no_font_draws_is_escaped_and_its_warning_held(
    tmp_path: Path, drawn: Drawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """飛行機 drew as three empty boxes and matplotlib's "Glyph 39131 missing from font(s) DejaVu Sans"
    reached the terminal: with no font here that has it, the name is drawn as its escape, warning held."""
    monkeypatch.setattr(report, "FALLBACK_FONTS", ())  # DejaVu Sans alone, whatever this machine has
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_confusion([[3, 1], [0, 4]], ["飛行機", "cat"], tmp_path / "cm.png", title="model on photos/飛行機")
    assert not [w for w in caught if "missing from" in str(w.message)]
    assert [t.get_text() for t in drawn.ax.get_yticklabels()] == ["\\u98db\\u884c\\u6a5f", "cat"]
    long = "猫と犬の非常に長いクラス名テスト" * 2  # 32 characters: cut to 29 and "…", then escaped
    plot_confusion([[3, 1], [0, 4]], [long, "cat"], tmp_path / "cm2.png", title="model")
    escaped = "".join(c.encode("unicode_escape").decode() for c in long[:29]) + "…"
    assert drawn.ax.get_yticklabels()[0].get_text() == escaped  # it was 4 characters and a broken escape


def test_installed_fallback_fonts_are_tried_in_order(
    tmp_path: Path, drawn: Drawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a CJK font is installed matplotlib (>= 3.6) falls back to it glyph by glyph: the family list is
    DejaVu Sans, then those of FALLBACK_FONTS that are installed (one that is not would warn 'not found')."""
    monkeypatch.setattr(report, "FALLBACK_FONTS", ("No Such Font CJK", "DejaVu Serif"))
    plot_confusion([[3, 1], [0, 4]], ["cat", "dog"], tmp_path / "cm.png")
    assert drawn.ax.get_yticklabels()[0].get_fontfamily() == ["DejaVu Sans", "DejaVu Serif"]


def test_cells_are_coloured_by_share_of_the_true_class(tmp_path: Path, drawn: Drawn) -> None:
    """Colour was the count scaled to the largest cell: a small class's perfect row looked pale beside a big
    class's errors. Now its share of the row, on a colour bar that says so; the count stays the cell's text."""
    plot_confusion([[90, 10], [0, 2]], ["big", "small"], tmp_path / "cm.png", title="m")
    image = drawn.ax.get_images()[0]
    assert image.get_array().tolist() == [[0.9, 0.1], [0.0, 1.0]]
    assert image.get_clim() == (0, 1)
    assert [t.get_text() for t in drawn.ax.texts] == ["90", "10", "0", "2"]
    bar = drawn.fig.axes[1]
    assert bar.get_ylabel() == "share of true class"
    assert "counts" in drawn.fig._suptitle.get_text()


def test_the_other_column_is_explained_on_the_figure(tmp_path: Path, drawn: Drawn) -> None:
    """The column of predictions outside the rows' classes (or NaN) was labelled "other" and nothing more; the
    axis says what it counts now, as the JSON's other_means does, and stays inside the figure."""
    plot_confusion([[0, 1, 5], [0, 0, 6]], ["3", "7"], tmp_path / "cm.png", title="m", other_column=True, data="d")
    assert [t.get_text() for t in drawn.ax.get_xticklabels()] == ["3", "7", "other"]
    label = drawn.ax.xaxis.label
    assert label.get_text() == 'predicted ("other": a class not among the rows, or NaN)'
    extent, figure = label.get_window_extent(drawn.renderer), drawn.fig.bbox
    assert figure.x0 <= extent.x0 and extent.x1 <= figure.x1
    plot_confusion([[3, 1], [0, 4]], ["cat", "dog"], tmp_path / "plain.png", title="m")
    assert drawn.ax.get_xlabel() == "predicted"


@pytest.mark.parametrize(
    ("top1", "low", "high"), [([100.0, 100.0, 100.0], None, 100.0), ([0.0, 0.0], 0.0, None), ([20.0, 60.0], 18.0, 62.0)]
)
def test_the_curves_accuracy_axis_stays_within_0_and_100(tmp_path: Path, top1: list, low: Any, high: Any) -> None:
    """A val top-1 flat at 100% autoscaled the axis to 105% (and a flat 0% to -5%): an accuracy's axis ends at
    100 and 0, other runs keep matplotlib's margins. The PNG is written (and was looked at)."""
    import matplotlib.pyplot as plt

    history = [
        {"epoch": e + 1, "train_loss": 1.0 / (e + 1), "val_loss": 1.0, "val_top1": t, "lr": 1e-3}
        for e, t in enumerate(top1)
    ]
    fig = report.curves_figure(history, "a run")
    try:
        axis = next(ax for ax in fig.axes if ax.get_title() == "validation top-1")
        drawn = axis.get_ylim()
        assert 0.0 <= drawn[0] < drawn[1] <= 100.0, drawn
        assert (low is None or drawn[0] == pytest.approx(low)) and (high is None or drawn[1] == pytest.approx(high))
    finally:
        plt.close(fig)
    report.plot_curves(history, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
