"""How hard is an ICBHI-layout set? A log-mel mean+std linear probe, scored with the ICBHI score.

Used to tune the simulator (`respiratory_generator`) so the mini-benchmark is far from solved, and
to report that number. Features: 64-band log-mel (25 ms window, 10 ms hop, 50-8000 Hz at 16 kHz)
of each cycle, mean and standard deviation over time (128 dims), standardised on the training
split; classifier: scikit-learn LogisticRegression. Score = (Se + Sp) / 2 on the official test split,
with Sp = correct normals / normals and Se = exactly-correct abnormal cycles / abnormal cycles.

    python -m tasks.data.icbhi_probe [--profile mini] [--root DIR] [--dataset PATH]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torchaudio

from ..datasets.icbhi import LABELS, load_icbhi

__all__ = ["icbhi_score", "logmel_stats", "probe"]


def icbhi_score(y_true: list[str], y_pred: list[str]) -> dict[str, float]:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    normal = t == "normal"
    sp = float(np.mean(p[normal] == "normal")) if normal.any() else float("nan")
    se = float(np.mean(p[~normal] == t[~normal])) if (~normal).any() else float("nan")
    return {"score": (se + sp) / 2, "se": se, "sp": sp}


_MEL = torchaudio.transforms.MelSpectrogram(16000, n_fft=400, win_length=400, hop_length=160, f_min=50, f_max=8000, n_mels=64)


def logmel_stats(wav: torch.Tensor) -> np.ndarray:
    if wav.numel() < 400:
        wav = torch.nn.functional.pad(wav, (0, 400 - wav.numel()))
    m = torch.log(_MEL(wav) + 1e-6)
    return torch.cat([m.mean(dim=1), m.std(dim=1)]).numpy()


def probe(path=None, profile: str = "mini", root=None, seed: int = 0) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train = load_icbhi(path, profile=profile, root=root, split="train")
    test = load_icbhi(path, profile=profile, root=root, split="test")
    xtr = np.stack([logmel_stats(e.load(16000)) for e in train])
    xte = np.stack([logmel_stats(e.load(16000)) for e in test])
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(max_iter=5000, random_state=seed).fit(scaler.transform(xtr), [e.label for e in train])
    pred = clf.predict(scaler.transform(xte))
    res = icbhi_score([e.label for e in test], list(pred))
    res.update(
        train_cycles=len(train),
        test_cycles=len(test),
        test_accuracy=float(np.mean(pred == np.array([e.label for e in test]))),
        test_classes={c: sum(e.label == c for e in test) for c in LABELS},
    )
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="mini", choices=["tiny", "mini"])
    ap.add_argument("--root", default=None)
    ap.add_argument("--dataset", default=None, help="ICBHI_final_database or its parent (e.g. the real corpus)")
    args = ap.parse_args(argv)
    print(json.dumps(probe(args.dataset, args.profile, args.root), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
