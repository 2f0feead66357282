"""Run logs: a JSON-lines file, an optional TensorBoard event file, a progress bar and a loss plot.

TensorBoard events are written here directly (TFRecord framing around hand-encoded `Event` protos)
because `torch.utils.tensorboard` imports TensorFlow whenever it is installed, and TensorFlow next to
triton in one process can segfault; TensorBoard itself is not installed on these machines either.
Only three messages are needed; their field numbers come from tensorboard's `event.proto` and
`summary.proto`:

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
    Summary { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }

Only the main process writes. On resume the JSON log is cut back to the checkpoint's step, so lines
from the interval lost by a kill are not duplicated.
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import time
from pathlib import Path
from typing import Iterable

from ..fileio import atomic_path, atomic_write_text

__all__ = ["crc32c", "masked_crc32c", "tfrecord", "scalar_event", "EventWriter", "RunLog", "read_log", "plot_loss"]


# -- TFRecord / protobuf encoding ------------------------------------------------------------------
def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum TFRecord uses."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(payload: bytes) -> bytes:
    """uint64 length, masked crc of the length, payload, masked crc of the payload (little endian)."""
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", masked_crc32c(length)) + payload + struct.pack("<I", masked_crc32c(payload))


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1  # int64 is encoded as its two's complement
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _bytes_field(number: int, data: bytes) -> bytes:
    return _field(number, 2) + _varint(len(data)) + data


def _event(wall_time: float, step: int, body: bytes) -> bytes:
    return _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(step) + body


def scalar_event(step: int, scalars: dict[str, float], wall_time: float | None = None) -> bytes:
    """Serialized `Event` with one `Summary.Value(tag, simple_value)` per scalar."""
    values = b"".join(
        _bytes_field(1, _bytes_field(1, tag.encode()) + _field(2, 5) + struct.pack("<f", float(v)))
        for tag, v in scalars.items()
    )
    return _event(time.time() if wall_time is None else wall_time, step, _bytes_field(5, values))


class EventWriter:
    """Appends scalar events to `<dir>/events.out.tfevents.<time>.<host>.<pid>`."""

    def __init__(self, log_dir: str | Path):
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = log_dir / f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}"
        self._fh = open(self.path, "ab")
        self._fh.write(tfrecord(_event(now, 0, _bytes_field(3, b"brain.Event:2"))))
        self._fh.flush()

    def add_scalars(self, step: int, scalars: dict[str, float]) -> None:
        finite = {k: v for k, v in scalars.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        self._fh.write(tfrecord(scalar_event(step, finite)))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


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
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()  # a fresh run in a reused directory
        if tensorboard:
            self.events = EventWriter(Path(out_dir) / "tb")

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.events is not None:
            scalars = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
            self.events.add_scalars(int(record["step"]), scalars)

    def close(self) -> None:
        if self.events is not None:
            self.events.close()


def plot_loss(rows: Iterable[dict], png: str | Path, title: str = "") -> Path | None:
    """Loss (and its components) against step; returns the PNG path, or None when there is nothing to plot."""
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # components equal to the total (a single-task run) would only overdraw the same curve
    keys = ["loss"] + sorted(k for k in rows[-1] if k.startswith("loss_") and any(r.get(k) != r["loss"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows]
    for k in keys:
        ax.plot(steps, [r.get(k, float("nan")) for r in rows], label=k, lw=1.5 if k == "loss" else 1.0)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(png)
