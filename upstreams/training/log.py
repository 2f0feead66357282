"""Run logs: a JSON-lines file, an optional TensorBoard event file, a progress bar and a loss plot.

TensorBoard events are written with `tensorboardX`, not `torch.utils.tensorboard`: the latter imports
TensorFlow whenever it is installed, and TensorFlow next to triton in one process can segfault;
tensorboardX brings its own protobuf messages and never imports TensorFlow.

Only the main process writes. On resume the JSON log is cut back to the checkpoint's step, so lines
from the interval lost by a kill are not duplicated.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

from ..fileio import atomic_path, atomic_write_text, dumps_strict

__all__ = ["EventWriter", "RunLog", "read_log", "plot_loss"]


class EventWriter:
    """Scalar events under `<dir>/events.out.tfevents.*` (one `Summary.Value` per tag and step), flushed per write."""

    def __init__(self, log_dir: str | Path):
        from tensorboardX import SummaryWriter

        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(logdir=str(log_dir))

    def add_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for tag, v in scalars.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self._writer.add_scalar(tag, float(v), global_step=step)
        self._writer.flush()  # a killed run keeps every step it logged

    def close(self) -> None:
        self._writer.close()


# -- JSON lines ------------------------------------------------------------------------------------
def read_log(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    return rows


class RunLog:
    """`<out>/log.jsonl` (one JSON object per logged step) plus TensorBoard events under `<out>/tb`."""

    def __init__(self, out_dir: str | Path, enabled: bool, resume_step: int | None = None, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(out_dir) / "log.jsonl"
        self.events: EventWriter | None = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_log(self.path) if r.get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(dumps_strict(r, indent=None) + "\n" for r in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()  # a fresh run in a reused directory
        if tensorboard:
            self.events = EventWriter(Path(out_dir) / "tb")

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(dumps_strict(record, indent=None) + "\n")  # a NaN loss is written as null
        if self.events is not None:
            scalars = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
            self.events.add_scalars(int(record["step"]), scalars)

    def close(self) -> None:
        if self.events is not None:
            self.events.close()


def plot_loss(rows: Iterable[dict], png: str | Path, title: str = "") -> Path | None:
    """Loss (and its components) against step; returns the PNG path, or None when there is nothing to plot.

    When the log holds probes (`probe/...` keys, see `probe.py`) two panels are added: the model's
    loss on the fixed probe batch against the trivial-solution floors (the run learns while its
    line stays below all of them), and RankMe of the online/target features with the kNN accuracy
    against its step-0 value.
    """
    rows = list(rows)
    probes = [r for r in rows if any(k.startswith("probe/") for k in r)]
    rows = [r for r in rows if "loss" in r]
    if not rows and not probes:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 1 + 2 * bool(probes)
    fig, axes = plt.subplots(panels, 1, figsize=(7, 4 + 3 * (panels - 1)), squeeze=False)
    ax = axes[0][0]
    if rows:
        # components equal to the total (a single-task run) would only overdraw the same curve
        keys = ["loss"] + sorted(k for k in rows[-1] if k.startswith("loss_") and any(r.get(k) != r["loss"] for r in rows))
        steps = [r["step"] for r in rows]
        for k in keys:
            ax.plot(steps, [r.get(k, float("nan")) for r in rows], label=k, lw=1.5 if k == "loss" else 1.0)
        ax.legend()
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if probes:
        _plot_probes(axes[1][0], axes[2][0], probes)
    fig.tight_layout()
    with atomic_path(png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(png)


def _plot_probes(floors_ax, rank_ax, probes: list[dict]) -> None:
    steps = [r["step"] for r in probes]

    def line(ax, key, **kw):
        if any(key in r for r in probes):
            ax.plot(steps, [r.get(key, float("nan")) for r in probes], marker=".", **kw)

    line(floors_ax, "probe/loss", label="loss on the probe batch", lw=2.0, color="k")
    for key, name in (("floor_constant", "constant vector"), ("floor_position", "per-position mean"),
                      ("floor_neighbour", "copy nearest visible in time")):
        line(floors_ax, f"probe/{key}", label=f"floor: {name}", lw=1.0, ls="--")
    floors_ax.set_xlabel("optimiser step")
    floors_ax.set_ylabel("2 - 2 cos")
    floors_ax.set_title("learning only while the loss is below every floor", fontsize=9)
    floors_ax.grid(alpha=0.3)
    floors_ax.legend(fontsize=8)

    for key, name in (("rankme_online", "RankMe online"), ("rankme_target", "RankMe target")):
        line(rank_ax, f"probe/{key}", label=name)
    rank_ax.set_xlabel("optimiser step")
    rank_ax.set_ylabel("RankMe (clip features)")
    rank_ax.grid(alpha=0.3)
    knn = sorted({k for r in probes for k in r if k.startswith("probe/knn_") and not k.endswith("_step0")})
    handles, labels = rank_ax.get_legend_handles_labels()
    if knn:
        acc_ax = rank_ax.twinx()
        for i, key in enumerate(knn):
            color = f"C{i + 2}"
            line(acc_ax, key, label=key[len("probe/"):], color=color)
            line(acc_ax, f"{key}_step0", label=f"{key[len('probe/'):]} at step 0", color=color, ls=":")
        acc_ax.set_ylabel("kNN accuracy")
        h2, l2 = acc_ax.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        rank_ax.legend(handles, labels, fontsize=8)
