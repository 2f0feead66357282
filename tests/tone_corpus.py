"""One writer for the small synthetic corpora the pretraining tests train on (tones + noise, `index.csv`).

Segment i is `1 + (i % len_cycle) * len_step` seconds of a `200 + freq_step * (i % freq_cycle)` Hz tone
at 0.3 plus N(0, 0.01) noise, 16 kHz; `label(i)` gives its label ("" = unlabelled). The defaults are
the ones the probe tests use; other tests pass their own so their audio stays what it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf


def write_tone_corpus(root: Path, n: int = 24, len_cycle: int = 4, len_step: float = 0.8, freq_cycle: int = 6,
                      freq_step: float = 100.0, label: Callable[[int], str] = lambda i: "") -> Path:
    """Write `root/audio/<i>.wav` and `root/index.csv`; returns the index path."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = ["path,start,stop,label,source"]
    for i in range(n):
        t = np.arange(int(16000 * (1.0 + (i % len_cycle) * len_step))) / 16000
        x = 0.3 * np.sin(2 * np.pi * (200 + freq_step * (i % freq_cycle)) * t) + rng.normal(0, 0.01, t.size)
        sf.write(root / "audio" / f"{i}.wav", x.astype(np.float32), 16000)
        rows.append(f"audio/{i}.wav,,,{label(i)},synthetic")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    return root / "index.csv"
