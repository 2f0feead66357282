"""Malformed datasets through the CLI: one clear error line (exit 2), or skipped and counted with --skip-bad;
and the dataset identity: a content fingerprint of exactly the files read, so no stale cache entry is served.

The corrupted copies come from `tests/malformed.py`; every run uses the fast `fbank` upstream and one lr.
"""

from __future__ import annotations

import json
import shutil

import pytest

from bench.cli import main
from tasks.clip_tasks import read_identity
from tasks.data import identity as ident_mod
from tasks.datasets.esc50 import load_esc50

from malformed import copy_dataset, corrupt, fill_non_finite, replace_same_size


@pytest.fixture(autouse=True)
def _private_hash_memo(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_HASH_CACHE", str(tmp_path / "file-sha256.sqlite"))


def bench_run(capsys, tmp_path, dataset, task, protocol, *extra, json_out=False):
    """`bench run` in-process: (exit code, stdout, non-empty stderr lines, record or None).

    `dataset`: a folder (passed as --dataset) or a list of arguments (`Corrupted.where`)."""
    capsys.readouterr()
    where = dataset if isinstance(dataset, list) else ["--dataset", str(dataset)]
    args = ["run", "--upstream", "fbank", "--task", task, "--protocol", protocol, *where,
            "--results", str(tmp_path / "results"), "--cache-root", str(tmp_path / "cache"), "--no-progress",
            *(["--lr", "1e-3"] if protocol != "dtw" else []), *(["--json"] if json_out else []), *extra]
    rc = main(args)
    out, err = capsys.readouterr()
    record = json.loads(out) if json_out and rc == 0 else None
    return rc, out, [line for line in err.splitlines() if line.strip()], record


def assert_one_error_line(rc, err, *needles):
    assert rc == 2, err
    assert len(err) == 1, err
    for n in needles:
        assert n in err[0], err[0]


# -- item 1: the identity covers the content read ----------------------------------------------------

@pytest.mark.parametrize("corruption", ["nan_clip", "same_size_clip"])
def test_changed_clip_in_a_built_dataset_is_refused_not_reused(tiny_root, tmp_path, capsys, corruption):
    """The tester's case: a built copy (with MANIFEST.json) whose clip is replaced after a first run."""
    data = copy_dataset(tiny_root, tmp_path, "esc50", keep_manifest=True)
    rc, out, _, _ = bench_run(capsys, tmp_path, data, "esc50", "linear")
    assert rc == 0 and "embeddings written to" in out
    victim = sorted((data / "ESC-50-master" / "audio").glob("*.wav"))[3]
    (fill_non_finite if corruption == "nan_clip" else replace_same_size)(victim)
    rc, out, err, _ = bench_run(capsys, tmp_path, data, "esc50", "linear")
    assert "reused" not in out
    assert_one_error_line(rc, err, victim.name)
    if corruption == "same_size_clip":  # valid audio: only the manifest's sha256 can tell
        assert "content differs from" in err[0] and "MANIFEST.json" in err[0] and "bench data build" in err[0]


def test_file_added_to_a_built_dataset_is_refused_naming_it(tiny_root, tmp_path, capsys):
    data = copy_dataset(tiny_root, tmp_path, "speech_commands", keep_manifest=True)
    yes = data / "speech_commands_v0.02" / "yes"
    extra = yes / "0000beef_nohash_0.wav"
    shutil.copyfile(sorted(yes.glob("*.wav"))[0], extra)  # a training clip the manifest never listed
    rc, out, err, _ = bench_run(capsys, tmp_path, data, "speech_commands", "linear")
    assert_one_error_line(rc, err, extra.name, "not listed in", "MANIFEST.json")


def test_real_corpus_same_size_replacement_misses_the_cache(tiny_root, tmp_path, capsys):
    data = copy_dataset(tiny_root, tmp_path, "esc50")  # no manifest: a real corpus
    rc, _, err, first = bench_run(capsys, tmp_path, data, "esc50", "linear", json_out=True)
    assert rc == 0 and first["dataset"]["manifest_sha256"].startswith("fp-")
    assert first["dataset"]["fingerprint"]["files"] == 76  # 75 clips + meta/esc50.csv
    replace_same_size(sorted((data / "ESC-50-master" / "audio").glob("*.wav"))[3])  # same size, same mtime
    rc, _, err, second = bench_run(capsys, tmp_path, data, "esc50", "linear", json_out=True)
    assert rc == 0 and any("embeddings written to" in line for line in err)
    assert second["dataset"]["manifest_sha256"] != first["dataset"]["manifest_sha256"]
    assert second["dataset"]["content_sha256"] != first["dataset"]["content_sha256"]
    assert second["details"]["cache"]["key"] != first["details"]["cache"]["key"]
    rc, _, err, third = bench_run(capsys, tmp_path, data, "esc50", "linear", json_out=True)
    assert any("embeddings reused from" in line for line in err)
    assert third["dataset"]["manifest_sha256"] == second["dataset"]["manifest_sha256"]


def test_identity_is_exactly_the_files_read(tiny_root, tmp_path):
    data = copy_dataset(tiny_root, tmp_path, "esc50", keep_manifest=True)
    examples = load_esc50(data)
    before = read_identity(data / "ESC-50-master", examples)
    assert before.manifest is not None and before.files == len(examples) + 1
    assert before.manifest_sha256 == ident_mod.sha256_file(data / "MANIFEST.json")
    readme = data / "ESC-50-master" / "README.md"
    readme.write_text(readme.read_text() + "\nnot read by the task\n")  # differs from the manifest, but unread
    after = read_identity(data / "ESC-50-master", examples)
    assert after.content_sha256 == before.content_sha256
    clips = [e.path for e in examples]
    assert before.sha256_of(clips) != before.content_sha256  # the cache's audio-only hash


def test_file_hash_memo_rehashes_a_same_size_same_mtime_rewrite(tmp_path, monkeypatch):
    monkeypatch.setattr(ident_mod, "RACY_SECONDS", 0.0)
    monkeypatch.setattr(ident_mod, "_MEMO", {})
    wav = tmp_path / "a.wav"
    import numpy as np
    import soundfile as sf

    sf.write(wav, (np.arange(8000) % 200 - 100).astype(np.int16), 8000, subtype="PCM_16")
    calls = []
    real = ident_mod.sha256_file
    monkeypatch.setattr(ident_mod, "sha256_file", lambda p: calls.append(p) or real(p))
    first = ident_mod.file_digests([wav])[str(wav)][0]
    monkeypatch.setattr(ident_mod, "_MEMO", {})  # a new process: only the SQLite memo is left
    assert ident_mod.file_digests([wav])[str(wav)][0] == first and len(calls) == 1
    replace_same_size(wav)  # keeps size and mtime; ctime moves
    second = ident_mod.file_digests([wav])[str(wav)][0]
    assert second != first and len(calls) == 2


# -- items 7 and 12: bad audio is named once, with what to do, or skipped and counted ---------------

BAD_FILES = [
    ("esc50", "nan_clip"), ("esc50", "inf_clip"), ("esc50", "truncated_clip"),
    ("icbhi", "nan_recording"), ("icbhi", "missing_txt"),
    ("speech_commands", "nan_clip"), ("speech_commands", "listed_file_missing"),
    ("librispeech", "transcript_without_audio"), ("quesst14", "listed_query_missing"),
]  # fmt: skip


@pytest.mark.parametrize("dataset,corruption", BAD_FILES)
def test_bad_file_is_one_error_line_or_skipped_once(tiny_root, tmp_path, capsys, dataset, corruption):
    bad = corrupt(tiny_root, tmp_path, dataset, corruption, profile=dataset == "librispeech")  # tiny PR budget
    rc, _, err, _ = bench_run(capsys, tmp_path, bad.where, bad.task, bad.protocol)
    assert_one_error_line(rc, err, bad.needle, "--skip-bad")
    if "nan" in corruption or "inf" in corruption:
        assert "NaN or infinite" in err[0]
    rc, _, err, record = bench_run(capsys, tmp_path, bad.where, bad.task, bad.protocol, "--skip-bad",
                                   json_out=True)
    assert rc == 0, err
    wav = bad.file.with_suffix(".wav") if dataset == "icbhi" else bad.file  # ICBHI skips the recording
    assert record["dataset"]["skipped_files"] == 1
    (entry,) = record["dataset"]["skipped"]
    assert entry.count(wav.name) == 1 and "--skip-bad" not in entry, entry


# -- items 5 and 8: malformed metadata is one line naming the file and line, never skipped ----------------

BAD_METADATA = [
    ("esc50", "csv_unknown_class"), ("esc50", "csv_target_mismatch"), ("esc50", "csv_fold_9"),
    ("esc50", "csv_duplicate_row"), ("esc50", "csv_text_fold"), ("esc50", "csv_text_target"),
    ("esc50", "csv_short_row"), ("esc50", "csv_wrong_header"), ("esc50", "csv_empty"), ("esc50", "csv_binary"),
    ("icbhi", "bad_annotation_line"), ("icbhi", "bad_split_line"),
    ("speech_commands", "bad_list_line"), ("librispeech", "bad_transcript_line"),
    ("quesst14", "bad_language_key_line"),
]  # fmt: skip


@pytest.mark.parametrize("dataset,corruption", BAD_METADATA)
def test_bad_metadata_is_one_error_line_naming_the_line(tiny_root, tmp_path, capsys, dataset, corruption):
    bad = corrupt(tiny_root, tmp_path, dataset, corruption)
    skip = ["--skip-bad"] if dataset == "esc50" or corruption == "bad_split_line" else []  # not a bad file to skip
    rc, _, err, _ = bench_run(capsys, tmp_path, bad.dataset, bad.task, bad.protocol, *skip)
    assert_one_error_line(rc, err, bad.needle)


def test_bad_annotation_line_is_skippable_as_its_recording(tiny_root, tmp_path, capsys):
    bad = corrupt(tiny_root, tmp_path, "icbhi", "bad_annotation_line")
    rc, _, err, record = bench_run(capsys, tmp_path, bad.dataset, "icbhi", "linear", "--skip-bad", json_out=True)
    assert rc == 0, err
    (entry,) = record["dataset"]["skipped"]
    assert f"{bad.file.name}:{bad.line}" in entry and entry.count(bad.file.with_suffix(".wav").name) == 1


def test_skip_bad_leaving_fewer_than_three_folds_is_one_line(tiny_root, tmp_path, capsys):
    bad = corrupt(tiny_root, tmp_path, "esc50", "too_few_folds")
    cut = sum(1 for w in (bad.dataset / "ESC-50-master" / "audio").glob("*.wav") if w.name[0] in "345")
    rc, _, err, _ = bench_run(capsys, tmp_path, bad.dataset, "esc50", "linear", "--skip-bad")
    assert_one_error_line(rc, err, "at least 3 folds", "found 2 (1, 2)", f"skipping {cut} bad file(s)")


def test_malformed_builder_leaves_the_tiny_data_alone(tiny_root, tmp_path):
    before = read_identity(tiny_root / "tiny" / "esc50" / "ESC-50-master", load_esc50(tiny_root / "tiny" / "esc50"))
    corrupt(tiny_root, tmp_path, "esc50", "same_size_clip")
    shutil.rmtree(tmp_path / "esc50-copy")
    after = read_identity(tiny_root / "tiny" / "esc50" / "ESC-50-master", load_esc50(tiny_root / "tiny" / "esc50"))
    assert after.content_sha256 == before.content_sha256 and after.manifest is not None
