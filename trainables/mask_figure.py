"""The mask summary figure of a trial: density per layer (and per cycle), as a small PNG.

Drawn where the masks are: the trial process draws it into its final checkpoint
(`trainables.tune`), so the sweep's driver, which runs every trial's bookkeeping one after
another, only uploads it; the driver draws it itself only for checkpoints that lack it
(`orchestrator.tracking.ops`). Matplotlib (Agg, no pyplot state) and pyarrow are imported when
a figure is drawn, not with this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Where a trial's mask summary goes, next to ``masks/masks.parquet``.
MASK_FIGURE = "density.png"


def _densities(path: Path) -> list[tuple[str, int, float]]:
    """(layer, numel, density) rows of a mask file, read without decoding a mask; none for a
    file that is not a mask file (`trainables.sparse.mask_io`, versions 1 and 2)."""
    import pyarrow.parquet as pq

    columns = ["layer", "numel", "density"]
    if not set(columns) <= set(pq.read_schema(path).names):
        return []
    table = pq.read_table(path, columns=columns)
    return list(zip(*(table.column(c).to_pylist() for c in ("layer", "numel", "density")), strict=True))


def render_mask_figure(final: Path | None, cycles: Sequence[tuple[int, Path]], out: Path,
                       title: str = "") -> Path | None:
    """A small PNG of a trial's masks: density per layer of the final mask (bars) and, when
    masks of two or more cycles (rounds) exist, density per layer and cycle (a heatmap).
    Returns `out`, or None when there is no mask to draw. Matplotlib's Agg, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = _densities(final) if final is not None else []
    per_cycle = [(c, _densities(p)) for c, p in sorted(cycles)]
    if not rows and per_cycle:
        rows = per_cycle[-1][1]
    if not rows:
        return None
    layers = [r[0] for r in rows]
    total = sum(r[1] for r in rows)
    overall = sum(r[1] * r[2] for r in rows) / total if total else 0.0
    wide = len(per_cycle) >= 2
    # readable in MLflow's artifact view: >= 4 inches tall at 150 dpi (a 4-layer net was 212 px)
    height = min(max(4.0, 2.0 + 0.3 * len(layers)), 14.0)
    fig = Figure(figsize=(12.0 if wide else 7.0, height), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if wide else 1, squeeze=False)[0]
    ax = axes[0]
    y = range(len(layers))
    ax.barh(list(y), [r[2] for r in rows], color="#1f77b4")
    ax.set_yticks(list(y), [f"{n} ({m:,})" for n, m, _ in rows], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("density (kept fraction)")
    ax.axvline(overall, color="#d62728", lw=1, ls="--", label=f"overall {overall:.3f}")
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title("final mask: density per layer", fontsize=9)
    if wide:
        import numpy as np

        ax2 = axes[1]
        index = {name: i for i, name in enumerate(layers)}
        grid = np.full((len(layers), len(per_cycle)), np.nan)
        for j, (_, dens) in enumerate(per_cycle):
            for name, _, d in dens:
                if name in index:
                    grid[index[name], j] = d
        im = ax2.imshow(grid, aspect="auto", vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
        if grid.size <= 240:  # small enough to print each value
            for (i, j), d in np.ndenumerate(grid):
                if not np.isnan(d):
                    ax2.text(j, i, f"{d:.2f}", ha="center", va="center", fontsize=8,
                             color="white" if d < 0.6 else "black")
        ax2.set_xticks(range(len(per_cycle)), [str(c) for c, _ in per_cycle], fontsize=9)
        ax2.set_yticks([])
        ax2.set_xlabel("cycle (IMP: round), masks/cycle_XX.parquet")
        ax2.set_title("density per layer and cycle", fontsize=9)
        fig.colorbar(im, ax=ax2, shrink=0.8, label="density")
    if title:
        fig.suptitle(title, fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fit_text_to_fonts(fig)
    fig.savefig(out, format="png")
    return out


def fit_text_to_fonts(fig: Any) -> None:
    """Every text of `fig` drawable by the font matplotlib picks for it: a character the font
    lacks (a run name in a script the installed fonts do not cover) is drawn as '?' instead
    of a missing-glyph box and a "Glyph missing" warning per character and figure."""
    from matplotlib.font_manager import findfont, get_font
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        value = text.get_text()
        if value.isascii():
            continue
        charmap = _charmap(findfont(text.get_fontproperties()), get_font)
        text.set_text("".join(ch if ord(ch) in charmap or ch == "\n" else "?" for ch in value))


_CHARMAPS: dict[str, frozenset[int]] = {}


def _charmap(path: str, get_font: Any) -> frozenset[int]:
    if path not in _CHARMAPS:
        _CHARMAPS[path] = frozenset(get_font(path).get_charmap())
    return _CHARMAPS[path]
