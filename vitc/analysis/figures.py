"""PNG figures of a LocalityReport (matplotlib, imported lazily).

Each figure carries the references that make its numbers readable: the gates' starting value,
the attention distance of uniform attention and of one patch (each layer's, from its own grid), the
query of a positional map, the (dx, dy) axes of a spatial prior, and colour bars. Head maps are paged (at most
`ROWS_PER_PAGE` rows of `HEADS_PER_ROW` maps per file) so that 12 blocks × 16 heads stay legible;
every number is also in summary.json.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from vitc._io import atomic_write
from vitc._lazy import pyplot
from vitc.analysis.locality import LocalityReport

GATE_START = 1 / (1 + math.exp(-1))  # GPSA initialises λ = 1 (vitc/models/convit.py), σ(1) ≈ 0.731
HEADS_PER_ROW = 8
ROWS_PER_PAGE = 4
PANEL = 1.3  # inches per map


def _save(fig: Any, path: Path) -> Path:
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    pyplot().close(fig)
    return path


def _short(layer: str) -> str:
    return layer.replace(".attn", "")


def attention_distance(report: LocalityReport, path: Path) -> Path:
    """`distance_figure` saved."""
    return _save(distance_figure(report), path)


def distance_figure(report: LocalityReport) -> Any:
    """Per layer: each head's mean attention distance (dots) and their mean, from 0, against the references
    of the layer's own token grid (the report's): uniform attention over its keys (dashed) and one patch
    (dotted). One line across for a ViT; a segment per stage for CvT, each labelled with its grid, where
    stage 0's references drawn for every stage put the later, coarser stages against the wrong numbers."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.4, 0.45 * len(report.layers) + 3), 4.2))
    for i, row in enumerate(report.distance):
        ax.scatter([i] * len(row), row, s=14, color="tab:blue", alpha=0.6, label="a head" if i == 0 else None)
    means = [sum(r) / len(r) for r in report.distance]
    ax.plot(range(len(means)), means, color="tab:red", marker="o", ms=4, label="mean of the heads")
    top = max([max(r) for r in report.distance] + report.uniform)
    runs = _runs(list(zip(report.grids, report.uniform, report.patch, strict=True)))
    for k, (first, last, ((rows, cols), uniform, patch)) in enumerate(runs):
        left, right = (first - 0.4, last + 0.4) if len(runs) > 1 else (-0.5, len(report.layers) - 0.5)
        grid = f"{rows}×{cols} grid"
        said = len(runs) == 1  # one grid: the numbers in the legend; several: beside each segment
        ax.hlines(
            uniform,
            left,
            right,
            color="0.3",
            ls="--",
            lw=1,
            label=None
            if k
            else (
                f"uniform attention, {grid}: {uniform:.1f} px" if said else "uniform attention over the layer's grid"
            ),
        )
        ax.hlines(patch, left, right, color="0.3", ls=":", lw=1, label=None if k else (
            f"one patch: {patch:g} px" if said else "one patch of the layer's grid"))  # fmt: skip
        if not said:
            ax.text(left, uniform, f" {grid}: {uniform:.1f} px", fontsize=7, va="bottom", color="0.3")
            ax.text(left, patch, f" {patch:g} px", fontsize=7, va="bottom", color="0.3")
    ax.set_ylim(0, top * 1.4)  # room for the legend above the data
    ax.set_xlim(-0.5, len(report.layers) - 0.5)
    ax.set_xticks(range(len(report.layers)), [_short(n) for n in report.layers], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("mean attention distance (px)")
    ax.set_title(f"{report.model}: how far each head looks")
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _runs(values: list[Any]) -> list[tuple[int, int, Any]]:
    """(first index, last index, value) of each stretch of equal consecutive values."""
    runs: list[tuple[int, int, Any]] = []
    for i, value in enumerate(values):
        if runs and runs[-1][2] == value:
            runs[-1] = (runs[-1][0], i, value)
        else:
            runs.append((i, i, value))
    return runs


def gates(report: LocalityReport, path: Path, start: float = GATE_START) -> Path:
    """σ(λ) per GPSA layer and head, with its value and its change since the start in each cell.

    The colour scale is fixed, not the data's min/max (which made a move of 0.005 look saturated): centred
    on where the gates started, white, and as far below as σ can go above it (1 − start), so that full red
    means a purely positional head; a gate further from the start on the content side widens the blue end.
    Small moves are pale here and read from the printed numbers."""
    plt = pyplot()
    colors = plt.matplotlib.colors
    names = list(report.gates)
    values = np.array([report.gates[n] for n in names])
    half = max(1.0 - start, start - float(values.min()))
    norm = colors.TwoSlopeNorm(vcenter=start, vmin=max(0.0, start - half), vmax=min(1.0, start + half))
    heads = values.shape[1]
    fig, ax = plt.subplots(figsize=(max(4.5, 0.75 * heads + 2.2), 0.55 * len(names) + 1.8))
    image = ax.imshow(values, cmap="RdBu_r", norm=norm, aspect="auto")
    for (r, c), v in np.ndenumerate(values):
        strong = abs(norm(v) - 0.5) > 0.3
        colour = "white" if strong else "black"
        ax.text(c, r, f"{v:.3f}\n{v - start:+.3f}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_yticks(range(len(names)), [_short(n) for n in names], fontsize=8)
    ax.set_xticks(range(heads), [f"h{h}" for h in range(heads)], fontsize=8)
    subtitle = f"σ and its change from the start, {start:.3f} (white)\nred: towards position, blue: towards content"
    ax.set_title(f"{report.model}: GPSA gates σ(λ)\n{subtitle}", fontsize=9)
    bar = fig.colorbar(image, ax=ax)
    bar.set_label("σ(λ)")
    bar.set_ticks(sorted({norm.vmin, start, norm.vmax}))
    bar.set_ticklabels([f"{t:.3f}" for t in sorted({norm.vmin, start, norm.vmax})])
    bar.ax.axhline(start, color="black", lw=1)
    fig.tight_layout()
    return _save(fig, path)


def _pages(names: list[str], heads: int) -> list[list[str]]:
    rows_per_layer = math.ceil(heads / HEADS_PER_ROW)
    per_page = max(1, ROWS_PER_PAGE // rows_per_layer)
    return [names[i : i + per_page] for i in range(0, len(names), per_page)]


def _page_path(path: Path, index: int) -> Path:
    return path if index == 0 else path.with_name(f"{path.stem}.{index + 1}{path.suffix}")


def head_maps(
    maps: dict[str, Any], path: Path, title: str, *, offsets: bool = False, label: str = "", centre: float | None = None
) -> list[Path]:
    """Heat maps per layer and head on one shared colour scale, paged; returns the files written.

    Positional maps (`offsets=False`, (H, s, s)) mark their query (s//2, s//2) with a +. Offset maps
    (`offsets=True`, (H, 2s−1, 2s−1) over (dy, dx)) get dx/dy axes and a + at (0, 0). `centre` makes
    the scale diverge around that value (e.g. 1 for multiplicative priors).
    """
    plt = pyplot()
    colors = plt.matplotlib.colors
    names = list(maps)
    arrays = {n: np.asarray(maps[n], dtype=np.float64) for n in names}
    low, high = min(a.min() for a in arrays.values()), max(a.max() for a in arrays.values())
    if centre is not None and low < centre < high:  # symmetric around the centre: white is neutral
        half = max(high - centre, centre - low)
        norm, cmap = colors.Normalize(vmin=centre - half, vmax=centre + half), "RdBu_r"
    else:
        norm, cmap = colors.Normalize(vmin=min(low, 0.0) if centre is None else low, vmax=high), "magma"
    heads = max(a.shape[0] for a in arrays.values())
    cols, rows_per_layer = min(heads, HEADS_PER_ROW), math.ceil(heads / HEADS_PER_ROW)
    pages = _pages(names, heads)
    written = []
    for index, page in enumerate(pages):
        rows = rows_per_layer * len(page)
        fig, axes = plt.subplots(
            rows, cols, figsize=(PANEL * cols + 1.4, PANEL * rows + 1.0), squeeze=False, layout="constrained"
        )
        image = None
        for li, name in enumerate(page):
            for h in range(rows_per_layer * cols):
                ax = axes[li * rows_per_layer + h // cols][h % cols]
                ax.set_xticks([])
                ax.set_yticks([])
                if h >= arrays[name].shape[0]:
                    ax.axis("off")
                    continue
                image = _draw(ax, arrays[name][h], norm, cmap, offsets)
                ax.set_title(f"h{h}", fontsize=9, pad=2)
                if h % cols == 0:
                    ax.set_ylabel(_short(name), fontsize=9)
        if offsets:
            _offset_axes(axes, arrays[page[0]].shape[-1])
        suffix = f" (page {index + 1} of {len(pages)})" if len(pages) > 1 else ""
        fig.suptitle(f"{title}{suffix}", fontsize=11)
        bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.85)
        bar.set_label(label)
        written.append(_save(fig, _page_path(path, index)))
    return written


def _draw(ax: Any, values: np.ndarray, norm: Any, cmap: str, offsets: bool) -> Any:
    if offsets:
        r = values.shape[-1] // 2  # offsets −r … r
        image = ax.imshow(values, norm=norm, cmap=cmap, extent=(-r - 0.5, r + 0.5, r + 0.5, -r - 0.5))
        ax.plot([0], [0], marker="+", color="lime", ms=8, mew=1.5)
        return image
    side = values.shape[-1]
    image = ax.imshow(values, norm=norm, cmap=cmap)
    ax.plot([side // 2], [side // 2], marker="+", color="cyan", ms=8, mew=1.5)  # the query analyse() took
    return image


def _offset_axes(axes: Any, size: int) -> None:
    """dx ticks under the bottom row, dy ticks left of the first column (offsets −r, 0, r)."""
    r = size // 2
    for ax in axes[-1]:
        if ax.axison:
            ax.set_xticks([-r, 0, r])
            ax.tick_params(labelsize=7)
            ax.set_xlabel("dx", fontsize=8, labelpad=0)
    for ax in axes[:, 0]:
        ax.set_yticks([-r, 0, r])
        ax.tick_params(labelsize=7)
        ax.set_ylabel(f"{ax.get_ylabel()}\ndy", fontsize=8)


def positional_attention(report: LocalityReport, path: Path) -> list[Path]:
    title = f"{report.model}: GPSA positional attention of the query + (keys on the patch grid)"
    return head_maps(report.positional_maps, path, title, label="attention weight")


def spatial_prior(report: LocalityReport, path: Path) -> list[Path]:
    title = f"{report.model}: SP-SA learned spatial prior over the key−query offset (dx, dy)"
    return head_maps(report.spatial_priors, path, title, offsets=True, label="prior (1: neutral)", centre=1.0)


def write_all(report: LocalityReport, folder: Path) -> list[Path]:
    """Every figure the report supports, into `folder`; the files written, in order."""
    written = [attention_distance(report, folder / "attention_distance.png")]
    if report.gates:
        written.append(gates(report, folder / "gates.png"))
    if report.positional_maps:
        written += positional_attention(report, folder / "positional_attention.png")
    if report.spatial_priors:
        written += spatial_prior(report, folder / "spatial_prior.png")
    return written
