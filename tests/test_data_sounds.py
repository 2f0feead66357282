"""The non-speech half of the offline benchmark: ESC-50, ICBHI, pretraining corpora, their loaders.

Checks real behaviour on the built `tiny` profile (layouts and formats as in the real corpora,
one source per fold, labels read back, no evaluation audio in any pretraining index), measures the
respiratory generator's output against the literature values it claims, rebuilds small parts to
check determinism, and feeds broken files to the loaders.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tasks.audio import AudioReadError
from tasks.data import DatasetNotBuiltError
from tasks.data import respiratory_generator as gen
from tasks.data.sound_sources import ESC50_TARGETS, ESC_BACKGROUNDS, ESC_SOURCES, PRETRAIN_NOISE, esc_originals
from tasks.datasets.esc50 import load_esc50
from tasks.datasets.icbhi import NAME_RE, load_icbhi
from tasks.datasets.pretrain import load_pretrain_index

ESC_NAME = re.compile(r"^([1-5])-(\d+)-([A-Z])-(\d+)\.wav$")


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def esc_top(tiny_root) -> Path:
    return tiny_root / "tiny" / "esc50" / "ESC-50-master"


@pytest.fixture(scope="module")
def icbhi_dir(tiny_root) -> Path:
    return tiny_root / "tiny" / "icbhi"


# -- ESC-50 ---------------------------------------------------------------------------------


def test_esc50_layout_matches_the_real_release(esc_top):
    with open(esc_top / "meta" / "esc50.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
        rows = list(reader)
    assert len({r["category"] for r in rows}) >= 15
    folds_of_source: dict[str, set[str]] = {}
    for r in rows:
        m = ESC_NAME.match(r["filename"])
        assert m, r["filename"]
        assert (m[1], m[2], m[3], m[4]) == (r["fold"], r["src_file"], r["take"], r["target"])
        assert ESC50_TARGETS[r["category"]] == int(r["target"])
        assert r["esc10"] in ("True", "False")
        folds_of_source.setdefault(r["src_file"], set()).add(r["fold"])
    assert all(len(f) == 1 for f in folds_of_source.values()), "a source recording straddles folds"
    for r in rows[:: max(1, len(rows) // 10)]:
        info = sf.info(str(esc_top / "audio" / r["filename"]))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (44100, 1, 220500, "PCM_16")
    audio = sorted(p.name for p in (esc_top / "audio").iterdir())
    assert audio == sorted(r["filename"] for r in rows)


def test_esc50_catalogue_is_honest():
    """>= 3 distinct originals per class, no original shared across sources, >= 15 classes."""
    seen: dict[str, str] = {}
    for category, sources in ESC_SOURCES.items():
        assert category in ESC50_TARGETS
        assert len(sources) >= 3, category
        for src in sources:
            originals = {s.original for s in src.sounds}
            assert len(originals) == 1, f"{src.key} mixes originals {originals}"
            o = originals.pop()
            assert seen.setdefault(o, src.key) == src.key, f"{o} used by {seen[o]} and {src.key}"
    assert len(ESC_SOURCES) >= 15
    multi = [c for c, s in ESC_SOURCES.items() if len({x.package for src in s for x in src.sounds}) > 1]
    assert len(multi) >= 10


def test_esc50_manifest_pins_packages_and_credits(esc_top):
    m = json.loads((esc_top.parent / "MANIFEST.json").read_text())
    assert {"openttd-opensfx", "gcompris-qt-data", "minetest-data", "tuxpaint-stamps-default"} <= set(m["debian_packages"])
    assert all(f["licence"] and f["sha256"] for f in m["source_files"])
    assert m["summary"]["classes"] >= 15


def test_esc50_loader_top_parent_and_errors(esc_top, tmp_path):
    a = load_esc50(esc_top)
    b = load_esc50(esc_top.parent)
    assert [e.key for e in a] == [e.key for e in b] and len(a) > 0
    assert {e.meta["fold"] for e in load_esc50(esc_top, folds=(2,))} == {2}
    wav = a[0].load(16000)
    assert wav.ndim == 1 and wav.numel() == 80000
    with pytest.raises(DatasetNotBuiltError, match="bench data build --profile mini --only esc50"):
        load_esc50(profile="mini", root=tmp_path)
    # a truncated clip: error naming the file, or skipped and counted
    copy = tmp_path / "ESC-50-master"
    shutil.copytree(esc_top / "meta", copy / "meta")
    (copy / "audio").mkdir()
    names = [e.path.name for e in a[:3]]
    for n in names:
        shutil.copyfile(esc_top / "audio" / n, copy / "audio" / n)
    with open(copy / "meta" / "esc50.csv", "w") as fh:
        fh.write("filename,fold,target,category,esc10,src_file,take\n")
        for e in a[:3]:
            fh.write(f"{e.path.name},{e.meta['fold']},{e.meta['target']},{e.label},False,{e.meta['src_file']},{e.meta['take']}\n")
    bad = copy / "audio" / names[1]
    bad.write_bytes(bad.read_bytes()[:5000])
    with pytest.raises(AudioReadError, match=re.escape(names[1])):
        load_esc50(tmp_path)
    ok = load_esc50(tmp_path, skip_bad=True)
    assert len(ok) == 2 and list(ok.skipped) == [str(bad)]


# -- ICBHI ----------------------------------------------------------------------------------


def test_icbhi_layout_and_split(icbhi_dir):
    db = icbhi_dir / "ICBHI_final_database"
    wavs = sorted(db.glob("*.wav"))
    assert wavs
    rates = {"AKGC417L": {44100}, "LittC2SE": {44100}, "Litt3200": {4000}, "Meditron": {4000, 10000}}
    for w in wavs:
        m = NAME_RE.match(w.stem)
        assert m and m["loc"] in {"Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr"}, w.name
        info = sf.info(str(w))
        assert info.samplerate in rates[m["device"]] and info.channels == 1
        lines = w.with_suffix(".txt").read_text().splitlines()
        assert lines
        for line in lines:
            parts = line.split("\t")
            assert len(parts) == 4 and parts[2] in "01" and parts[3] in "01", line
            assert 0 <= float(parts[0]) < float(parts[1])
    split = dict(line.split("\t") for line in (icbhi_dir / "ICBHI_challenge_train_test.txt").read_text().splitlines())
    assert set(split) == {w.stem for w in wavs} and set(split.values()) == {"train", "test"}
    patients = {s: {r[:3] for r, v in split.items() if v == s} for s in ("train", "test")}
    assert not patients["train"] & patients["test"], "split is not patient-wise"
    assert 0.15 <= len(patients["test"]) / (len(patients["train"]) + len(patients["test"])) <= 0.5


def test_icbhi_loader_reads_cycles(icbhi_dir):
    cycles = load_icbhi(icbhi_dir)
    assert {e.label for e in cycles} <= {"normal", "crackle", "wheeze", "both"}
    assert len({e.label for e in cycles}) == 4
    first = cycles[0]
    a, b, c, w = first.path.with_suffix(".txt").read_text().splitlines()[0].split("\t")
    assert (first.start, first.stop) == (float(a), float(b))
    assert first.label == {(0, 0): "normal", (1, 0): "crackle", (0, 1): "wheeze", (1, 1): "both"}[(int(c), int(w))]
    assert {"patient", "device", "sample_rate", "location", "split"} <= set(first.meta)
    train = load_icbhi(icbhi_dir / "ICBHI_final_database", split="train")
    test = load_icbhi(icbhi_dir, split="test")
    assert len(train) + len(test) == len(cycles)
    assert {e.meta["split"] for e in train} == {"train"}


def test_icbhi_loader_real_quirks(tmp_path):
    """Nested audio folder, split file beside the database with other capitalisation, cycles past
    the end of the file clipped, blank lines, mixed sample rates, corrupt audio named."""
    db = tmp_path / "ICBHI_final_database" / "audio_and_txt_files"
    db.mkdir(parents=True)
    sf.write(db / "101_1b1_Al_sc_Meditron.wav", np.zeros(4000 * 5, dtype=np.int16), 4000, subtype="PCM_16")
    (db / "101_1b1_Al_sc_Meditron.txt").write_text("0.1\t2.5\t1\t0\n\n2.5\t5.8\t1\t1\n5.0\t5.02\t0\t0\n")
    sf.write(db / "102_1b1_Tc_mc_AKGC417L.wav", np.zeros(44100 * 3, dtype=np.int16), 44100, subtype="PCM_16")
    (db / "102_1b1_Tc_mc_AKGC417L.txt").write_text("0.000\t2.9\t0\t1\n")
    (tmp_path / "ICBHI_Challenge_train_test.txt").write_text("101_1b1_Al_sc_Meditron\ttrain\n102_1b1_Tc_mc_AKGC417L\ttest\n")
    cycles = load_icbhi(tmp_path)
    assert [(e.label, e.start, e.stop) for e in cycles] == [
        ("crackle", 0.1, 2.5), ("both", 2.5, 5.0), ("wheeze", 0.0, 2.9)
    ]  # fmt: skip
    assert [e.meta["sample_rate"] for e in cycles] == [4000, 4000, 44100]
    assert cycles[1].load(16000).numel() == int(2.5 * 16000)
    (db / "102_1b1_Tc_mc_AKGC417L.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AudioReadError, match="102_1b1_Tc_mc_AKGC417L.wav"):
        load_icbhi(tmp_path)
    kept = load_icbhi(tmp_path, skip_bad=True)
    assert len(kept) == 2 and len(kept.skipped) == 1
    with pytest.raises(DatasetNotBuiltError, match="--only icbhi"):
        load_icbhi(profile="tiny", root=tmp_path / "nothing")


# -- the respiratory generator, measured ------------------------------------------------------


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x, n=1 << 16))
    return float(np.fft.rfftfreq(1 << 16, 1 / sr)[np.argmax(spec)])


def _span_ms(x: np.ndarray, sr: int, rel: float = 0.05) -> float:
    idx = np.flatnonzero(np.abs(x) >= rel * np.max(np.abs(x)))
    return (idx[-1] - idx[0] + 1) / sr * 1000


@pytest.mark.parametrize("fine, freq, dur", [(True, (450, 900), (3, 8)), (False, (220, 480), (9, 21))])
def test_crackles_have_literature_frequency_and_duration(fine, freq, dur):
    rng = np.random.default_rng(0)
    sr = 44100
    for _ in range(20):
        f, d = gen.crackle_params(rng, fine)
        x = gen.crackle(sr, f, d)
        assert freq[0] <= _peak_hz(x, sr) <= freq[1]
        assert dur[0] <= _span_ms(x, sr) <= dur[1]
        # initial deflection: the first half-period holds the largest excursion
        assert np.argmax(np.abs(x)) < sr / f / 2 + 2


def test_crackles_twice_as_often_in_inspiration():
    rng = np.random.default_rng(1)
    cycle = gen.Cycle(0.0, 1.2, 3.6)
    onsets = [o for _ in range(3000) for o in gen.crackle_onsets(rng, cycle, 0.5, 1)]
    insp = sum(1 for t, _, i in onsets if i and t < cycle.insp_end)
    exp = sum(1 for t, _, i in onsets if not i and t >= cycle.insp_end)
    assert insp + exp == len(onsets)
    assert 1.8 <= insp / exp <= 2.2
    fine_late = [t for t, f, i in onsets if f and i]
    assert min(fine_late) >= 0.4 * 1.2 - 1e-9


@pytest.mark.parametrize("sr", [4000, 10000, 44100])
def test_wheezes_are_continuous_tones_with_harmonics(sr):
    rng = np.random.default_rng(2)
    x = gen.wheeze(rng, sr, 0.25, 400.0, harmonic_decay=0.4, n_harmonics=3)
    assert len(x) / sr == pytest.approx(0.25, abs=1e-3) and len(x) / sr > 0.08
    assert 360 <= _peak_hz(x, sr) <= 440
    spec = np.abs(np.fft.rfft(x, n=1 << 16))
    freqs = np.fft.rfftfreq(1 << 16, 1 / sr)
    band = lambda lo, hi: spec[(freqs >= lo) & (freqs <= hi)].max()  # noqa: E731
    assert band(720, 880) > 5 * band(560, 640)  # second harmonic, well above the floor between
    r = gen.wheeze(rng, sr, 0.5, 150.0, harmonic_decay=0.7, n_harmonics=6)
    assert _peak_hz(r, sr) < 200  # rhonchus


def test_vesicular_sound_falls_above_its_corner_and_follows_breathing():
    rng = np.random.default_rng(3)
    sr = 4000
    cycles = gen.breathing_cycles(rng, 30.0, 15.0, 2.0)
    assert 6 <= len(cycles) <= 10
    env = gen.flow_envelope(30 * sr, sr, cycles)
    x = gen.vesicular_sound(rng, 30 * sr, sr, env, corner_hz=300.0)
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    low = spec[(freqs > 150) & (freqs < 300)].mean()
    high = spec[(freqs > 800) & (freqs < 1200)].mean()
    assert 10 * np.log10(low / high) > 15
    c = cycles[1]
    mid_insp = int((c.start + c.insp_end) / 2 * sr)
    mid_exp = int((c.insp_end + c.end) / 2 * sr)
    assert env[mid_insp] > env[mid_exp] > 0


def test_heart_sounds_are_low_frequency_and_devices_band_limit():
    rng = np.random.default_rng(4)
    h = gen.heart_sounds(rng, 44100 * 5, 44100, 70.0)
    assert _peak_hz(h, 44100) < 150
    noise = rng.standard_normal(44100 * 2).astype(np.float32)
    y = gen.device_response(noise, 44100, gen.DEVICES["LittC2SE"], rng)
    spec = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / 44100)
    assert spec[(freqs > 150) & (freqs < 600)].mean() > 100 * spec[(freqs > 4000) & (freqs < 8000)].mean()


def test_recording_labels_follow_patient_not_device():
    """Same patient and breathing, different devices: identical labels (device gives nothing away)."""
    pat = gen.Patient(1, "COPD", 18, 2.0, 1.0, 300, 80, 0.5, 0.4, 0.5, 2.0, 10.0, 400.0, 0.3, 3.0, 0.5)
    cycles = gen.breathing_cycles(np.random.default_rng(5), 30.0, 18, 2.0, start=0.3)
    labels = set()
    for dev, sr in (("AKGC417L", 44100), ("Litt3200", 4000), ("Meditron", 10000)):
        audio, lab = gen.synthesize_recording(np.random.default_rng(6), pat, gen.DEVICES[dev], sr, 20.0, "Pl", cycles)
        assert len(audio) == 20 * sr and np.isfinite(audio).all()
        labels.add(tuple(lab))
    assert len(labels) == 1


# -- pretraining corpora ----------------------------------------------------------------------


def test_pretrain_indices_are_self_contained_and_loadable(tiny_root):
    base = tiny_root / "tiny" / "pretrain"
    for corpus in ("general", "respiratory", "noise"):
        with open(base / corpus / "index.csv", newline="") as fh:
            assert fh.readline().strip() == "path,start,stop,label,source"
        ex = load_pretrain_index(base / corpus)
        assert ex and all(e.path.is_file() and base / corpus in e.path.parents for e in ex)
        wav = ex[0].load(16000)
        assert wav.numel() > 0
    resp = load_pretrain_index(base / "respiratory" / "index.csv")
    assert {e.label for e in resp} <= {"normal", "crackle", "wheeze", "both"}
    assert all(e.label is None for e in load_pretrain_index(base / "general"))


def test_no_evaluation_audio_leaks_into_pretraining(tiny_root):
    base = tiny_root / "tiny"
    rows = {c: list(csv.DictReader(open(base / "pretrain" / c / "index.csv"))) for c in ("general", "respiratory", "noise")}

    # speech: only train-clean-100 utterances, and no dev/test speaker
    libri = base / "librispeech" / "LibriSpeech"
    heldout = {p.stem for split in ("dev-clean", "test-clean") for p in (libri / split).rglob("*.flac")}
    heldout_spk = {u.split("-")[0] for u in heldout}
    speech = [r["source"] for r in rows["general"] if r["source"].startswith("librispeech:")]
    assert speech and all(s.startswith("librispeech:train-clean-100/") for s in speech)
    assert not {s.rsplit("/", 1)[1].split("-")[0] for s in speech} & heldout_spk

    # environmental: no ESC-50 source file, no file of an original any ESC-50 source uses, no ESC background
    esc_members = {s.member for srcs in ESC_SOURCES.values() for src in srcs for s in src.sounds}
    esc_members |= {s.member for s in ESC_BACKGROUNDS}
    debian = [r["source"].split(":", 2) for c in ("general", "noise") for r in rows[c] if r["source"].startswith("debian:")]
    assert debian
    assert not {m for _, _, m in debian} & esc_members
    noise_members = {s.member for s in PRETRAIN_NOISE}
    assert {m for _, _, m in debian if m in noise_members}
    m = json.loads((base / "esc50" / "MANIFEST.json").read_text())
    esc_source_sha = {f["sha256"] for f in m["source_files"]}
    pm = json.loads((base / "pretrain" / "MANIFEST.json").read_text())
    assert not {f["sha256"] for f in pm["source_files"]} & esc_source_sha
    assert not esc_originals() & {f"{p}:{x}" for p, _, x in debian}

    # respiratory: only recordings of the official training split, no test patient
    split = dict(line.split("\t") for line in (base / "icbhi" / "ICBHI_challenge_train_test.txt").read_text().splitlines())
    test_patients = {r[:3] for r, s in split.items() if s == "test"}
    recs = {r["source"].split("/", 1)[1].split("#")[0] for r in rows["respiratory"]}
    assert recs and all(split[r] == "train" for r in recs)
    assert not {r["source"].split(":")[1].split("/")[0] for r in rows["respiratory"]} & test_patients

    # content: no pretraining file is byte-identical to any evaluation file
    eval_files = list((base / "esc50").rglob("*.wav")) + list((base / "icbhi").rglob("*.wav"))
    eval_files += [p for split in ("dev-clean", "test-clean") for p in (libri / split).rglob("*.flac")]
    eval_sha = {_sha(p) for p in eval_files}
    pre_sha = {_sha(p) for p in (base / "pretrain").rglob("*") if p.suffix in (".wav", ".flac")}
    assert not pre_sha & eval_sha


def test_pretrain_loader_errors(tmp_path):
    with pytest.raises(DatasetNotBuiltError, match="--only pretrain"):
        load_pretrain_index(tmp_path)
    (tmp_path / "index.csv").write_text("path,start,stop,label,source\nmissing.wav,,,,x\n")
    with pytest.raises(AudioReadError, match="missing.wav"):
        load_pretrain_index(tmp_path)
    assert len(load_pretrain_index(tmp_path, skip_bad=True).skipped) == 1
    (tmp_path / "index.csv").write_text("file,label\n")
    with pytest.raises(ValueError, match="header"):
        load_pretrain_index(tmp_path)


# -- determinism ------------------------------------------------------------------------------


def test_icbhi_rebuild_is_byte_identical_whatever_the_workers(tiny_root, tmp_path):
    from tasks.data import build

    (tmp_path / "_sources").symlink_to(tiny_root / "_sources")
    build("tiny", root=tmp_path, only=["icbhi"], workers=1, log=lambda _m: None)
    ref = tiny_root / "tiny" / "icbhi" / "MANIFEST.json"
    assert _sha(tmp_path / "tiny" / "icbhi" / "MANIFEST.json") == _sha(ref)


def test_esc50_rebuild_is_byte_identical(tiny_root, tmp_path):
    from tasks.data import build

    (tmp_path / "_sources").symlink_to(tiny_root / "_sources")
    build("tiny", root=tmp_path, only=["esc50"], workers=1, log=lambda _m: None)
    ref = tiny_root / "tiny" / "esc50" / "MANIFEST.json"
    assert _sha(tmp_path / "tiny" / "esc50" / "MANIFEST.json") == _sha(ref)


def test_rcc_reader_reads_gcompris_bundles(tiny_root):
    from tasks.data import rcc

    bundles = list((tiny_root / "_sources" / "extracted").glob("gcompris-qt-data_*/usr/share/gcompris-qt/rcc"))
    assert bundles
    farm = bundles[0] / "explore_farm_animals.rcc"
    names = rcc.member_names(farm)
    dog = [n for n in names if n.endswith("animals/dog.ogg")]
    assert dog
    data = dict(rcc.members(farm, (".ogg",)))[dog[0]]
    import io

    assert sf.info(io.BytesIO(data)).duration > 0.5
    with pytest.raises(rcc.RccError, match="qres"):
        rcc.member_names(Path(__file__))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
