"""One figure of the report: the drawing, the numbers behind it, and where it comes from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # a driver-side tool: never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from trainables.mask_figure import fit_text_to_fonts  # noqa: E402


@dataclass
class Figure:
    """`data` is exactly what is drawn (written as CSV and Parquet beside the PNG)."""

    name: str  # file stem, e.g. slt_table1
    title: str
    caption: str
    paper: str  # e.g. "soft-iep.txt Table 1"
    data: pd.DataFrame
    fig: Any  # matplotlib Figure
    parents: list[str] = field(default_factory=list)  # parent run ids whose trials it shows

    def write(self, out: Path) -> list[Path]:
        out.mkdir(parents=True, exist_ok=True)
        png, csv, parquet = (out / f"{self.name}.{ext}" for ext in ("png", "csv", "parquet"))
        fit_text_to_fonts(self.fig)  # a run name the fonts cannot draw: '?', not a warning per glyph
        self.fig.savefig(png, dpi=110, bbox_inches="tight")
        plt.close(self.fig)
        self.data.to_csv(csv, index=False)
        self.data.to_parquet(parquet, index=False)
        return [png, csv, parquet]


@dataclass(frozen=True)
class Missing:
    """A figure the runs do not allow: the line printed instead, naming the space to run."""

    name: str
    space: str
    why: str

    def line(self) -> str:
        return f"{self.name}: skipped ({self.why}); run --space {self.space}"


Builder = Callable[[Any], "Figure | Missing | list[Figure | Missing]"]


def axes(ncols: int = 1, nrows: int = 1, w: float = 5.0, h: float = 3.6) -> tuple[Any, Any]:
    fig, ax = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False)
    return fig, ax


def mean_se(df: pd.DataFrame, by: list[str], col: str) -> pd.DataFrame:
    """Mean, standard error (std/√n, 0 for n = 1) and n of `col` per group."""
    g = df.groupby(by, dropna=False)[col]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["se"] = (out["std"] / np.sqrt(out["count"])).fillna(0.0)
    return out.rename(columns={"mean": f"{col}_mean", "se": f"{col}_se", "count": "n"}).drop(columns="std")


def parents_of(trials: list[Any]) -> list[str]:
    return sorted({t.parent_id for t in trials})


def ratio_axis(a: Any, values: Any, *, axis: str = "x", label: str = "remaining ratio (log)",
               invert: bool = True, max_ticks: int = 9) -> None:
    """A log axis of fractions ticked at the ratios the runs reached (0.8, 0.64, ...), in plain
    numbers (matplotlib's log ticks would say 6×10⁻¹), thinned to `max_ticks`; with `invert`
    pruning proceeds to the right."""
    import matplotlib.ticker as mticker

    ticks = sorted({round(float(v), 4) for v in np.asarray(values, dtype=float).ravel()
                    if np.isfinite(v) and v > 0}, reverse=True)
    if len(ticks) > max_ticks:
        step = -(-len(ticks) // max_ticks)
        ticks = ticks[::step]
    which = a.xaxis if axis == "x" else a.yaxis
    (a.set_xscale if axis == "x" else a.set_yscale)("log")
    if ticks:
        which.set_major_locator(mticker.FixedLocator(ticks))
        which.set_major_formatter(mticker.FixedFormatter([f"{t:.3g}" for t in ticks]))
    which.set_minor_formatter(mticker.NullFormatter())
    which.set_minor_locator(mticker.NullLocator())
    if invert and axis == "x" and not a.xaxis_inverted():
        a.invert_xaxis()
    if axis == "x":
        a.set_xlabel(label)
        for t in a.get_xticklabels():
            t.set_rotation(45 if len(ticks) > 5 else 0)
    else:
        a.set_ylabel(label)


def path_arrow(a: Any, xs: Any, ys: Any, color: Any) -> None:
    """An arrow head on the last segment of a cycle/round path: which way the run went."""
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2:
        return
    a.annotate("", xy=(x[-1], y[-1]), xytext=(x[-2], y[-2]),
               arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.2, "mutation_scale": 12})
