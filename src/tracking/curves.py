"""The loss-curve PNG each run logs: train_loss and val_loss per epoch on a log scale.

Drawn in the MLflow sidecar (src/tracking/sidecar.py) on its writer's one figure, redrawn for each
run, or, while a batch's runs close (hydra/launcher=batched), in a process of its own beside the
sidecar's writes, on that process's one figure (`drawer_curve`). This module imports only the standard
library at load time; matplotlib when the first curve is drawn.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def warm_plots() -> None:
    """Import matplotlib and draw a figure once (it loads its fonts), so a loss curve need not."""
    import io

    history = [(1, 1.0, 1.0), (2, 0.1, 0.2)]
    loss_curve(history, 1, "warm", io.BytesIO())  # type: ignore[arg-type]


class LossCurves:
    """The loss-curve figure, built once and redrawn for each run: building a figure and its ticks
    costs more than drawing it, and a sweep draws one per run. Each PNG is byte for byte what a
    fresh figure draws (tests/test_tracking.py checks it after other curves)."""

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(6, 4))
        FigureCanvasAgg(self.figure)
        self.ax = self.figure.add_subplot()
        (self.train,) = self.ax.plot([], [], label="train_loss")
        (self.val,) = self.ax.plot([], [], label="val_loss")
        self.best: Any = None  # the best epoch's vertical line, if the run has one
        self.ax.set(xlabel="epoch", ylabel="loss", yscale="log")
        # Fixed margins that fit the log-scale tick labels: tight_layout would cost a second draw.
        self.figure.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.92)
        self.lock = threading.Lock()  # one figure: one drawing at a time

    def draw(
        self, history: Sequence[tuple[int, float, float]], best_epoch: int, title: str, path: Path
    ) -> Path:
        """train_loss and val_loss per epoch (`history`: (epoch, train_loss, val_loss)), log scale."""
        epochs, train, val = zip(*history, strict=True) if history else ((), (), ())
        with self.lock:
            if self.best is not None:
                self.best.remove()
            self.best = None
            # The steps a new figure takes, in its order: the best epoch's line counts in the data
            # limits through the view the curves give on a linear y scale (its x, converted through
            # that view, can differ in the last bit, which can move the legend by a pixel).
            self.ax.set_yscale("linear")
            self.train.set_data(epochs, train)
            self.val.set_data(epochs, val)
            self.ax.relim()
            self.ax.autoscale_view()
            if best_epoch:
                label = f"best epoch {best_epoch}"
                self.best = self.ax.axvline(best_epoch, color="grey", linestyle=":", label=label)
            self.ax.set_yscale("log")
            # y=1.0 is where matplotlib's automatic placement puts it (nothing above the axes); given,
            # it skips measuring every y tick label once more before the draw.
            self.ax.set_title(title, y=1.0)
            self.ax.legend()
            self.figure.savefig(path, dpi=100)
        return path


@functools.cache
def drawer_figure() -> LossCurves:
    """The one figure of a process that only draws (the sidecar's drawer)."""
    return LossCurves()


def drawer_curve(
    history: Sequence[tuple[int, float, float]], best_epoch: int, title: str, path: Path
) -> Path:
    """`loss_curve` in the sidecar's drawing process, redrawing its one figure: a fresh figure per
    curve costs twice the drawing (0.14 s against 0.07 s a curve, measured)."""
    return loss_curve(history, best_epoch, title, path, drawer_figure())


def loss_curve(
    history: Sequence[tuple[int, float, float]],
    best_epoch: int,
    title: str,
    path: Path,
    figure: LossCurves | None = None,
) -> Path:
    """The run's loss curve as a PNG at `path`, redrawn on `figure` (a writer's, shared by its runs)
    or on a fresh one; a run without epochs always on a fresh one (a shared figure's limits would
    stay the previous run's)."""
    return (figure if figure is not None and history else LossCurves()).draw(history, best_epoch, title, path)
