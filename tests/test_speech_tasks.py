"""Speech tasks on the tiny profile: error rates by hand, CTC pieces, s3prl parity, every task x
protocol through `bench.run`, QbE layer selection on dev only, bad input.

Fast by construction: frozen runs use one learning rate except where the grid itself is tested,
and every run shares one embedding cache (PR and ASR reuse one extraction per upstream).
"""

from __future__ import annotations

import json
import shutil

import jiwer
import numpy as np
import pytest
import torch

from bench.errors import UserError
from bench.run import RunRequest, run
from bench.protocols.ctc import SETTINGS, effective_head, settings_for
from tasks.ctc import BLANK, CHARACTERS, PHONES39, ctc_loss, greedy_decode, min_frames
from tasks.ctc_fit import CTCBudget, FrameSource, fit_ctc, training_batches
from tasks.metrics.edit_distance import cer, per, wer
from tasks.speech_heads import SUPERB_ASR_HEAD, SUPERB_PR_HEAD, CTCHead, FrozenCTC, RNNs, WeightedSum

QUIET = dict(progress=False)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One results directory and one embedding cache for the module's runs."""
    base = tmp_path_factory.mktemp("speech")
    return {"results": str(base / "results"), "cache_root": str(base / "cache")}


def _req(tiny_root, shared, **kw) -> RunRequest:
    base = dict(upstream="random", upstream_options={"arch": "tiny"}, profile="tiny", data_root=str(tiny_root),
                **shared, **QUIET)
    base.update(kw)
    return RunRequest(**base)


# -- error rates against hand-computed values ---------------------------------------------------

def test_per_counts_substitutions_deletions_insertions_by_hand():
    # utt 1: B deleted; utt 2: IY inserted; utt 3: T -> D substituted. 3 errors / 8 reference phones
    r = per(["AH B K D", "S T", "T AA"], ["AH K D", "S T IY", "D AA"])
    assert (r.substitutions, r.deletions, r.insertions, r.reference_tokens) == (1, 1, 1, 8)
    assert r.rate == pytest.approx(100 * 3 / 8)


def test_wer_and_cer_by_hand_and_against_jiwer():
    refs, hyps = ["THE CAT SAT", "ON THE MAT"], ["THE CAT SAT DOWN", "ON A MAT"]
    assert wer(refs, hyps).rate == pytest.approx(100 * 2 / 6)  # one insertion, one substitution
    assert cer(["AB CD"], ["AB CE"]).rate == pytest.approx(20.0)  # 5 characters, the space counts
    assert cer(["A"], ["A B C"]).rate == pytest.approx(400.0)  # insertions can exceed 100 %
    assert wer(["GO NOW"], [""]).rate == pytest.approx(100.0)
    refs = ["HELLO WORLD", "A QUICK BROWN FOX", "JUMPS OVER"]
    hyps = ["HELO WORLD", "A QUICK FOX", "JUMPS OVER THE DOG"]
    assert wer(refs, hyps).rate == pytest.approx(100 * jiwer.wer(refs, hyps))
    assert cer(refs, hyps).rate == pytest.approx(100 * jiwer.cer(refs, hyps))


def test_error_rate_rejects_bad_input():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["A", "B"], ["A"])
    with pytest.raises(ValueError, match="no tokens"):
        per([""], ["AH"])


# -- labels, loss, decoding ---------------------------------------------------------------------

def test_label_sets_round_trip_and_reject_unknown_symbols():
    ids = CHARACTERS.encode("hello  world's")
    assert CHARACTERS.symbols[ids[5]] == "|" and BLANK not in ids
    assert CHARACTERS.decode(ids) == "HELLO WORLD'S"
    assert len(PHONES39) == 40 and PHONES39.decode(PHONES39.encode("HH AH L OW")) == "HH AH L OW"
    with pytest.raises(ValueError, match=r"\['3'\] not in the label set"):
        CHARACTERS.encode("ROOM 3")
    with pytest.raises(ValueError, match="AH0"):
        PHONES39.encode("HH AH0 L OW")  # stress marks are not SUPERB's 39 phones


def test_greedy_decoding_merges_repeats_and_drops_blanks():
    a, b = 3, 5
    path = [a, a, BLANK, a, b, b, BLANK]
    logits = torch.nn.functional.one_hot(torch.tensor([path, path]), 8).float()
    assert greedy_decode(logits, torch.tensor([7, 4])) == [[a, a, b], [a, a]]


def test_beam_search_decodes_a_clear_path():
    pytest.importorskip("flashlight.lib.text", reason="beam search needs flashlight-text")
    from tasks.ctc import BeamSearchDecoder

    path = [i for c in CHARACTERS.encode("SEE ALL") for i in (c, BLANK)]  # blanks keep the two Ls apart
    logits = 10 * torch.nn.functional.one_hot(torch.tensor([path]), len(CHARACTERS)).float()
    ids = BeamSearchDecoder(CHARACTERS, beam_size=5)(logits, torch.tensor([len(path)]))[0]
    assert CHARACTERS.decode(ids) == "SEE ALL" == CHARACTERS.decode(greedy_decode(logits, torch.tensor([len(path)]))[0])
    with pytest.raises(ValueError, match="character"):
        BeamSearchDecoder(PHONES39)


def test_ctc_loss_prefers_the_right_labels():
    torch.manual_seed(0)
    target = [4, 7, 7, 2]
    # a path that spells the target (blank between the repeated 7s) vs a random one
    path = [4, BLANK, 7, BLANK, 7, 2]
    good = 8 * torch.nn.functional.one_hot(torch.tensor([path]), 10).float()
    noise = torch.randn(1, 6, 10)
    lengths = torch.tensor([6])
    assert ctc_loss(good, lengths, [target]) < 0.1 < ctc_loss(noise, lengths, [target])
    assert min_frames(target) == 5  # the repeated 7 needs a blank in between


def test_patience_counts_only_after_the_warm_up():
    """No early stop before `min_steps`; ties on dev error are broken by the dev CTC loss."""
    feats = np.random.default_rng(0).standard_normal((40 * 10, 1, 4)).astype(np.float16)
    index = np.array([[10 * i, 10] for i in range(40)])
    source = FrameSource(feats, index, list(range(40)), None)
    model = FrozenCTC(WeightedSum(1), CTCHead(4, len(PHONES39), SUPERB_PR_HEAD, 160))
    losses = iter([5.0, 4.0, 4.5, 4.6, 4.7, 4.8, 4.9, 5.0, 5.1, 5.2])  # best at the 2nd evaluation
    evaluate = lambda m: {"per": 100.0, "ctc_loss": next(losses)}
    rank = lambda d: (d["per"], d["ctc_loss"])
    targets = [[1, 2]] * 40
    budget = CTCBudget(max_steps=20, eval_every=2, patience=1, batch_seconds=0.5, min_steps=10)
    res = fit_ctc(model, source, targets, evaluate, rank, [{"params": list(model.parameters()), "lr": 1e-3}],
                  budget, 40)
    assert res.best_step == 4 and res.dev["ctc_loss"] == 4.0  # stuck at 100 %: the lowest dev loss wins
    assert res.steps_run == 12  # evaluations at 6..10 are within the warm-up; the one at 12 ends it
    assert budget.as_dict()["min_steps"] == 10


def test_training_batches_cover_everything_within_budget():
    lengths = [int(x) for x in np.random.default_rng(0).integers(5, 100, 57)]
    batches = training_batches(lengths, 300, np.random.default_rng(1))
    assert sorted(i for b in batches for i in b) == list(range(57))
    assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 300 for b in batches)
    assert batches == training_batches(lengths, 300, np.random.default_rng(1))  # seeded
    assert batches != training_batches(lengths, 300, np.random.default_rng(2))  # reshuffled per epoch


# -- the heads are s3prl's ----------------------------------------------------------------------

@pytest.mark.parametrize("module", ["LSTM", "GRU"])
def test_rnns_equal_s3prl_outputs_and_gradients(module):
    """Same state dict, same outputs and gradients as s3prl's packed-sequence RNNs (incl. downsampling)."""
    from upstreams import s3prl_compat

    s3prl_compat.patch()
    from s3prl.downstream.asr.model import RNNs as S3prlRNNs

    torch.manual_seed(0)
    cfg = SUPERB_ASR_HEAD.with_rnn(module=module, dim=[16, 12], dropout=[0.0, 0.0], layer_norm=[True, False],
                                   proj=[False, True], sample_rate=[2, 1], total_rate=320).rnn
    ref, ours = S3prlRNNs(8, 5, 160, **cfg), RNNs(8, 5, 160, **cfg)
    ours.load_state_dict(ref.state_dict())  # strict: identical parameter names and shapes
    x, lengths = torch.randn(3, 23, 8), torch.tensor([23, 17, 9])
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    (a, la), (b, lb) = ref(x_ref, lengths), ours(x_ours, lengths)
    assert la.tolist() == lb.tolist() == [5, 4, 2]
    valid_a = torch.cat([a[i, :n] for i, n in enumerate(la)])
    valid_b = torch.cat([b[i, :n] for i, n in enumerate(lb)])
    torch.testing.assert_close(valid_b, valid_a, atol=1e-6, rtol=1e-5)
    valid_a.square().sum().backward()
    valid_b.square().sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-6, rtol=1e-5)
    for p_ref, p_ours in zip(ref.parameters(), ours.parameters()):
        torch.testing.assert_close(p_ours.grad, p_ref.grad, atol=1e-5, rtol=1e-4)


def test_weighted_sum_is_s3prl_featurizer_semantics():
    torch.manual_seed(0)
    layers = torch.randn(2, 9, 4, 6)  # [B, T, L, D]
    mix = WeightedSum(4)
    assert mix.layer_weights() == [0.25] * 4  # softmax of zero-initialised weights
    with torch.no_grad():
        mix.weights.copy_(torch.tensor([0.3, -1.0, 2.0, 0.0]))
    w = torch.softmax(mix.weights.detach(), 0)
    torch.testing.assert_close(mix(layers), sum(w[k] * layers[:, :, k] for k in range(4)))


def test_weighted_sum_normalize_is_layer_norm_of_each_layer_first():
    """s3prl's Featurizer with normalize=True: F.layer_norm over the feature dim of every layer, then the sum."""
    torch.manual_seed(0)
    layers = torch.randn(2, 9, 3, 6) * torch.tensor([1.0, 10.0, 100.0]).view(1, 1, 3, 1) + 5.0
    mix = WeightedSum(3, normalize=True)
    normed = [(layers[:, :, k] - layers[:, :, k].mean(-1, keepdim=True))
              / torch.sqrt(layers[:, :, k].var(-1, unbiased=False, keepdim=True) + 1e-5) for k in range(3)]
    torch.testing.assert_close(mix(layers), sum(normed) / 3)
    assert not WeightedSum(3).normalize  # SUPERB's default: off


def test_profiles_have_superb_heads_grids_and_budgets():
    assert settings_for("asr", None, "weighted").head == SUPERB_ASR_HEAD  # a real corpus: SUPERB's head
    assert SUPERB_ASR_HEAD.rnn["dim"] == [1024, 1024] and SUPERB_ASR_HEAD.project_dim == 1024
    assert settings_for("pr", None, "linear").budget.max_steps == 100_000
    assert settings_for("asr", None, "weighted").budget.max_steps == 200_000
    assert 1e-2 in settings_for("pr", None, "weighted").lrs and 1e-4 in settings_for("asr", None, "weighted").lrs
    assert all(len(s.lrs) >= 3 for (_, profile, _), s in SETTINGS.items() if profile != "mini")
    assert all(len(s.lrs) >= 2 for s in SETTINGS.values())
    # full keeps SUPERB's early stopping from the first evaluation; mini waits for CTC to leave the blank plateau
    assert settings_for("pr", None, "weighted").budget.min_steps == 0
    assert settings_for("pr", "mini", "weighted").budget.min_steps >= 2 * settings_for("pr", "mini", "weighted").budget.eval_every
    # weighted sums layer-norm their layers by default when there are several (None = on for multi-layer
    # upstreams); mini ASR layer-norms every upstream's layers, fbank's too, and selects on CER first
    assert all(st.normalize_layers is None for key, st in SETTINGS.items() if key != ("asr", "mini", "frozen"))
    mini_asr = settings_for("asr", "mini", "weighted")
    assert mini_asr.normalize_layers and mini_asr.rank_keys[0] == "cer"
    # s3prl's RNNs need a whole number of upstream frames per output frame
    head = settings_for("asr", "mini", "weighted").head
    assert effective_head(head, 160).rnn["total_rate"] == 320 and effective_head(head, 640).rnn["total_rate"] == 640


# -- every task x protocol end to end -----------------------------------------------------------

def _check_ctc_record(rec: dict, task: str, protocol: str) -> None:
    metric = {"pr": "per", "asr": "wer"}[task]
    assert (rec["task"], rec["protocol"], rec["metric"]) == (task, protocol, metric)
    assert rec["higher_is_better"] is False and rec["split"] == "test-clean"
    assert rec["score"] >= 0 and rec["lr"] == rec["selection"]["chosen"]["lr"]
    sel = rec["selection"]
    assert sel["on"] == "validation" and sel["test_used_for_selection"] is False
    assert all(f"dev_{metric}" in g for g in sel["grid"])
    assert f"{metric}_asterisk" in rec["secondary"]  # the real-speech split, secondary
    if task == "asr":
        assert {"cer", "cer_asterisk", "dev_cer"} <= set(rec["secondary"])
    head = rec["details"]["head"]
    assert head["select"] == ("FrameLevel" if task == "pr" else "RNNs") and head["profile"] == "tiny"
    assert rec["details"]["budget"]["max_steps"] > 0 and rec["details"]["runs"]
    assert 0.0 <= rec["details"]["labels_vs_frames"]["fraction"] <= 1.0
    assert rec["dataset"]["manifest_sha256"] and rec["dataset"]["splits"]["test-asterisk"]["utterances"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("task", ["pr", "asr"])
@pytest.mark.parametrize("protocol", ["weighted", "linear", "finetune"])
def test_ctc_task_protocol_writes_valid_record(tiny_root, shared, task, protocol):
    lr = settings_for(task, "tiny", protocol).lrs[1]  # one grid point; the sweep is tested below
    # asr/linear runs its frozen upstream online, the path taken for corpora too large to cache
    options = {"feature_cache": "off"} if (task, protocol) == ("asr", "linear") else {}
    record, path = run(_req(tiny_root, shared, task=task, protocol=protocol, lrs=[lr], task_options=options))
    rec = json.loads(path.read_text())
    _check_ctc_record(rec, task, protocol)
    if protocol == "weighted":
        assert len(rec["details"]["layer_weights"]) == 3  # tiny arch: 3 hidden states
        assert rec["details"]["normalize_layers"] is True  # the default; --normalize-layers off gives s3prl's raw sum
    if protocol == "linear":
        assert rec["details"]["layer"] == 2 and rec["details"]["standardization"]["frames"] > 0
    if protocol == "finetune":
        assert rec["details"]["features"] == "finetune" and rec["details"]["upstream_lr_scale"] == 0.1
    elif options:
        assert rec["details"]["features"] == "online" and "sampled" in rec["details"]["standardization"]["utterances"]
    else:
        assert rec["details"]["features"] == "cache"


def test_pr_head_learns_on_tiny_with_the_default_grid(tiny_root, shared):
    record, _ = run(_req(tiny_root, shared, task="pr", protocol="weighted"))
    grid = record.selection["grid"]
    assert [g["lr"] for g in grid] == list(settings_for("pr", "tiny", "weighted").lrs)
    best = min(grid, key=lambda g: g["dev_per"])
    assert record.lr == best["lr"] and record.secondary["dev_per"] == pytest.approx(best["dev_per"])
    history = record.details["runs"][f"{record.lr:g}"]["history"]
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]  # CTC loss falls
    # clearly below 100 % PER on dev (one unseen voice); test is another unseen voice, after 2 minutes of training
    assert record.secondary["dev_per"] < 85.0 and record.score < 100.0


def test_asr_loss_falls_and_pr_asr_share_the_extraction(tiny_root, shared):
    pr, _ = run(_req(tiny_root, shared, task="pr", protocol="linear", lrs=[1e-2]))
    asr, _ = run(_req(tiny_root, shared, task="asr", protocol="weighted", lrs=[3e-3]))
    assert asr.details["cache"]["hit"] is True and asr.details["cache"]["key"] == pr.details["cache"]["key"]
    history = asr.details["runs"]["0.003"]["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    again, _ = run(_req(tiny_root, shared, task="asr", protocol="weighted", lrs=[3e-3]))
    assert (again.score, again.secondary["cer"]) == (asr.score, asr.secondary["cer"])  # seeded: same record twice
    assert _same_curves(again, asr)
    assert asr.details["normalize_layers"] is True and "layer-normed" in asr.details["featurizer"]
    normed, _ = run(_req(tiny_root, shared, task="asr", protocol="weighted", lrs=[3e-3],
                         task_options={"normalize_layers": False}))
    assert normed.details["normalize_layers"] is False and "layer-normed" not in normed.details["featurizer"]
    assert not _same_curves(normed, asr)  # the option reaches the featurizer


def _same_curves(a, b) -> bool:
    """Training curves equal up to the wall-clock seconds they record."""
    strip = lambda r: {lr: {k: v for k, v in run.items() if k != "seconds"} for lr, run in r.details["runs"].items()}
    return strip(a) == strip(b)


# -- QbE ----------------------------------------------------------------------------------------

def test_qbe_record_layer_chosen_on_dev_and_stdlist_scores_the_same(tiny_root, shared, monkeypatch):
    import bench.protocols.qbe_dtw as qbe
    from tasks.metrics.twv import GroundTruth, load_groundtruth, score_detections
    from tasks.qbe import read_stdlist

    record, path = run(_req(tiny_root, shared, task="qbe", protocol="dtw"))
    rec = json.loads(path.read_text())
    assert (rec["metric"], rec["split"], rec["higher_is_better"], rec["lr"]) == ("mtwv", "eval", True, None)
    per_layer = rec["details"]["per_layer"]
    assert len(per_layer) == 3 and rec["selection"]["on"] == "validation"
    best = max(per_layer, key=lambda r: (r["dev_mtwv"], -r["layer"]))["layer"]
    assert rec["selection"]["chosen"]["layer"] == rec["details"]["chosen_layer"] == best
    assert {"atwv", "dev_mtwv", "mtwv_english_only"} <= set(rec["secondary"])
    # the eval stdlist, scored like the official scorer would, gives the record's numbers
    gt_dir = tiny_root / "tiny" / "quesst14" / "quesst14Database" / "scoring" / "groundtruth_quesst14_eval"
    again = score_detections(load_groundtruth(gt_dir), read_stdlist(rec["details"]["stdlist"]["eval"]),
                             default_score=qbe.DEFAULT_SCORE)
    assert again.mtwv == pytest.approx(rec["score"], abs=2e-3)  # the file holds 4-decimal scores

    # scrambling the *eval* ground truth changes the score but never the layer choice
    real = qbe.load_groundtruth

    def scrambled(directory):
        gt = real(directory)
        if "eval" not in str(directory):
            return gt
        docs = list(gt.documents)
        return GroundTruth(gt.queries, gt.documents, frozenset((q, docs[(docs.index(d) + 1) % len(docs)])
                                                                for q, d in gt.targets))

    monkeypatch.setattr(qbe, "load_groundtruth", scrambled)
    other, _ = run(_req(tiny_root, shared, task="qbe", protocol="dtw", write=False))
    assert other.details["chosen_layer"] == best and other.selection["grid"] == rec["selection"]["grid"]
    assert other.details["cache"]["hit"] is True


# -- bad input ----------------------------------------------------------------------------------

def test_bad_requests_fail_with_clear_errors(tiny_root, shared):
    with pytest.raises(UserError, match="no protocol 'linear'"):
        run(_req(tiny_root, shared, task="qbe", protocol="linear"))
    with pytest.raises(UserError, match="no protocol 'dtw'"):
        run(_req(tiny_root, shared, task="pr", protocol="dtw"))
    with pytest.raises(UserError, match="--lr does not apply"):
        run(_req(tiny_root, shared, task="qbe", protocol="dtw", lrs=[1e-3]))
    with pytest.raises(UserError, match="--layer 7 is out of range"):
        run(_req(tiny_root, shared, task="pr", protocol="linear", layer=7))
    with pytest.raises(UserError, match="no trainable parameters"):
        run(_req(tiny_root, shared, task="pr", protocol="finetune", upstream="fbank", upstream_options={}))
    with pytest.raises(UserError, match="asr only"):
        run(_req(tiny_root, shared, task="pr", protocol="weighted", task_options={"decoder": "beam"}))


def test_corpus_problems_are_named(tiny_root, shared, tmp_path):
    src = tiny_root / "tiny" / "librispeech" / "LibriSpeech"
    corpus = tmp_path / "LibriSpeech"
    shutil.copytree(src / "train-clean-100", corpus / "train-clean-100")
    with pytest.raises(FileNotFoundError, match="needs the 'dev-clean' split"):
        run(_req(tiny_root, shared, task="asr", protocol="weighted", dataset=str(tmp_path)))
    for split in ("dev-clean", "test-clean"):
        shutil.copytree(src / split, corpus / split)
    trans = sorted(corpus.glob("dev-clean/*/*/*.trans.txt"))[0]
    lines = trans.read_text().splitlines()
    uid, text = lines[0].split(" ", 1)
    trans.write_text("\n".join([f"{uid} {text} 42", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"\['2', '4'\] not in the label set"):
        run(_req(tiny_root, shared, task="asr", protocol="weighted", dataset=str(tmp_path)))
