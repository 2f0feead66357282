"""How intelligible are the synthetic voices of the LibriSpeech-layout corpus? An off-the-shelf check.

Decodes a fixed sample of utterances per voice with PocketSphinx's stock US-English acoustic and
language model (PyPI `pocketsphinx`, offline, nothing trained on our data) and reports the word
error rate per voice, next to the same recogniser on real human speech (the corpus's
`test-asterisk` split, Allison Smith's telephony prompts). Because those prompts are 8 kHz
telephone-band audio, every voice is also decoded after an 8 kHz round trip, so synthetic and
human speech can be compared under the same bandwidth. It also draws one spectrogram per voice.

The stock language model knows nothing of the Jargon File or Bierce, so absolute WERs are high
for everybody; what matters is the gap between the synthetic voices and the human reference.

    pip install pocketsphinx
    python scripts/speech_intelligibility.py --dataset ~/.cache/audio-repr-bench/data/mini/librispeech \\
        --per-voice 20 --png intelligibility.png --json intelligibility.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from tasks.datasets.librispeech import find_root, load_librispeech

SPLITS = ("train-clean-100", "dev-clean", "test-clean", "test-asterisk")


def _voice_of_speaker(root: Path) -> dict[str, str]:
    out = {}
    for line in (root / "SPEAKERS.TXT").read_text().splitlines():
        if line.startswith(";"):
            continue
        cols = [c.strip() for c in line.split("|")]
        name = cols[4]
        out[cols[0]] = "human/allison (asterisk)" if name.startswith("Allison") else name.split()[0]
    return out


def _decoder():
    try:
        from pocketsphinx import Decoder
    except ImportError:
        sys.exit("this check needs PocketSphinx: run `pip install pocketsphinx` (it ships its US-English model)")
    return Decoder(samprate=16000, loglevel="FATAL")


def _decode(decoder, wav: np.ndarray) -> str:
    pcm = (np.clip(wav, -1, 1) * 32767).astype(np.int16).tobytes()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr.upper() if hyp else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, help="LibriSpeech folder (or its parent) of a built profile")
    ap.add_argument("--per-voice", type=int, default=20)
    ap.add_argument(
        "--min-words",
        type=int,
        default=5,
        help="only utterances this long: on one-word prompts a single insertion is a 100 %% error",
    )
    ap.add_argument("--voices", nargs="*", default=None, help="only voices whose name contains one of these")
    ap.add_argument("--png", default=None, help="write one spectrogram per voice here")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import jiwer
    import torch

    from tasks.audio import resample

    torch.set_num_threads(1)  # tiny resampling ops; extra threads only contend with the decoder

    root = find_root(args.dataset)
    voice_of = _voice_of_speaker(root)
    by_voice = defaultdict(list)
    for split in SPLITS:
        if (root / split).is_dir():
            for e in load_librispeech(root, split):
                by_voice[voice_of[e.meta["speaker"]]].append(e)
    decoder = _decoder()
    rows, examples = [], {}
    for voice in sorted(by_voice):
        if args.voices and not any(v in voice for v in args.voices):
            continue
        utts = [e for e in by_voice[voice] if len(e.text.split()) >= args.min_words]
        pick = np.random.default_rng(0).permutation(len(utts))[: args.per_voice]
        refs, hyp16, hyp8 = [], [], []
        for i in sorted(pick):
            wav = utts[i].load(16000)
            refs.append(utts[i].text)
            hyp16.append(_decode(decoder, wav.numpy()))
            hyp8.append(_decode(decoder, resample(resample(wav, 16000, 8000), 8000, 16000).numpy()))
        rows.append(
            {
                "voice": voice,
                "utterances": len(refs),
                "wer_16k": round(100 * jiwer.wer(refs, hyp16), 1),
                "wer_8k_band": round(100 * jiwer.wer(refs, hyp8), 1),
                "example_ref": refs[0],
                "example_hyp": hyp16[0],
            }
        )
        examples[voice] = utts[min(pick)]
        print(
            f"{voice:40s} n={len(refs):3d}  WER 16k {rows[-1]['wer_16k']:5.1f} %"
            f"   8k band {rows[-1]['wer_8k_band']:5.1f} %"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    if args.png:
        _spectrograms(examples, Path(args.png))
    return 0


def _spectrograms(examples: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.signal import spectrogram

    fig, axes = plt.subplots(len(examples), 1, figsize=(11, 2.1 * len(examples)))
    for ax, (voice, e) in zip(np.atleast_1d(axes), examples.items()):
        x = e.load(16000).numpy()[: 16000 * 4]
        f, t, s = spectrogram(x, 16000, nperseg=400, noverlap=240)
        ax.pcolormesh(t, f, 10 * np.log10(s + 1e-12), shading="auto", cmap="magma", vmin=-110, vmax=-30)
        words = e.text.split()
        ax.set_title(f"{voice}: {' '.join(words[:12])}{' ...' if len(words) > 12 else ''}", fontsize=8)
        ax.set_ylabel("Hz", fontsize=7)
    plt.tight_layout()
    fig.savefig(path, dpi=72)


if __name__ == "__main__":
    raise SystemExit(main())
