"""PNG figures of a LocalityReport (matplotlib, imported lazily)."""

from __future__ import annotations

from pathlib import Path

from vitc._io import atomic_write
from vitc.analysis.locality import LocalityReport
from vitc.train.report import pyplot


def _save(fig: object, path: Path) -> Path:
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)  # type: ignore[attr-defined]
    pyplot().close(fig)
    return path


def attention_distance(report: LocalityReport, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(report.layers) + 3), 4))
    for i, row in enumerate(report.distance):
        ax.scatter([i] * len(row), row, s=12, color="tab:blue", alpha=0.6)
    ax.plot(range(len(report.distance)), [sum(r) / len(r) for r in report.distance], color="tab:red", label="mean")
    ax.set_xticks(range(len(report.layers)), [n.replace(".attn", "") for n in report.layers], rotation=60, fontsize=7)
    ax.set_ylabel("mean attention distance (px)")
    ax.set_title(f"{report.model}: how far each head looks (dots: heads)")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def gates(report: LocalityReport, path: Path) -> Path:
    plt = pyplot()
    names = list(report.gates)
    fig, ax = plt.subplots(figsize=(5, 0.4 * len(names) + 2))
    image = ax.imshow([report.gates[n] for n in names], vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("head")
    ax.set_title("σ(λ): reliance on position (1) vs content (0)")
    fig.colorbar(image)
    fig.tight_layout()
    return _save(fig, path)


def head_maps(maps: dict[str, object], path: Path, title: str) -> Path:
    """One row per layer, one column per head, of (rows, cols) heat maps."""
    plt = pyplot()
    names = list(maps)
    heads = max(m.shape[0] for m in maps.values())  # type: ignore[attr-defined]
    fig, axes = plt.subplots(len(names), heads, figsize=(1.6 * heads, 1.6 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        for h in range(heads):
            ax = axes[r][h]
            ax.axis("off")
            if h < maps[name].shape[0]:  # type: ignore[attr-defined]
                ax.imshow(maps[name][h].numpy(), cmap="magma")  # type: ignore[index]
                ax.set_title(f"{name.replace('.attn', '')} h{h}", fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
