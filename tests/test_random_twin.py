"""`random -o like=CKPT`: the exact step-0 twin of a pretraining run, and its refusals.

Real tiny runs (a few steps on the tiny profile's pretraining corpora) are the ground truth: the
step-0 weights are captured from the very recipe `pretrain` hands to the training loop, before any
optimiser step, and the twin rebuilt later from the checkpoint alone must equal them bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import upstreams
import upstreams.training.run as run_module
from upstreams.errors import CheckpointError, OptionError
from upstreams.fileio import sha256_file
from upstreams.frontend import LogMelConfig
from upstreams.m2d.model import M2D
from upstreams.m2d.pretrain import M2D_PRESETS, load_init
from upstreams.m2d.upstream import DEFAULT_NORM_STATS, random_upstream
from upstreams.training.run import pretrain

SEED = 7
# a custom geometry the `random arch=` presets cannot express: 3 blocks, a 160-frame window
GEOMETRY = {"encoder": {"depth": 3, "input_frames": 160}}


def _quiet(_msg: str) -> None:
    pass


def _run(method: str, out: Path, overrides: dict):
    """Train `method` tiny; returns (TrainResult, encoder state dict the loop started from)."""
    captured = {}
    real_train = run_module.train

    def spy(recipe, *args, **kwargs):
        captured["step0"] = {k: v.detach().clone() for k, v in recipe.model.encoder.state_dict().items()}
        return real_train(recipe, *args, **kwargs)

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_module, "train", spy)
        try:
            result = pretrain(method, "tiny", out=str(out), overrides=overrides, log=_quiet)
        finally:
            torch.set_num_threads(threads)
    return result, captured["step0"]


def _train(corpus: Path, cache: Path, steps: int = 3) -> dict:
    return {"data": {"index": str(corpus), "cache_dir": str(cache)},
            "train": {"steps": steps, "warmup_steps": 1, "checkpoint_every": steps, "threads": 1, "seed": SEED}}


@pytest.fixture(scope="module")
def m2d_run(tiny_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("twin")
    overrides = {**_train(tiny_root / "tiny" / "pretrain" / "general" / "index.csv", root / "cache"), **GEOMETRY}
    result, step0 = _run("m2d", root / "runs" / "m2d" / "custom", overrides)
    return result.checkpoint, step0


@pytest.fixture(scope="module")
def m2dx_run(tiny_root, m2d_run, tmp_path_factory):
    """The tiny M2D-X recipe (respiratory corpus, noise, distillation, labels) started from the m2d run."""
    root = tmp_path_factory.mktemp("twinx")
    pre = tiny_root / "tiny" / "pretrain"
    overrides = _train(pre / "respiratory" / "index.csv", root / "cache", steps=2)
    overrides.update(init=str(m2d_run[0]), noise={"index": str(pre / "noise" / "index.csv"), "eta": 0.3})
    result, step0 = _run("m2dx", root / "runs" / "m2dx" / "from-m2d", overrides)
    return result.checkpoint, step0


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, msg
    return msg


# -- the twin is step 0 ----------------------------------------------------------------------------
def test_twin_encoder_is_step0_bit_for_bit(m2d_run):
    ckpt, step0 = m2d_run
    twin = upstreams.load("random", like=str(ckpt))
    _assert_same_state(twin.encoder.state_dict(), step0)
    # independently: the seed and the model class the run's config names
    saved = torch.load(ckpt, weights_only=True)
    torch.manual_seed(SEED)
    enc = M2D(twin.encoder.config, M2D_PRESETS["tiny"].predictor).encoder
    _assert_same_state(twin.encoder.state_dict(), enc.state_dict())
    # ... and it is not the trained encoder
    trained = saved["encoder"]
    assert any(not torch.equal(trained[k], step0[k]) for k in step0)


def test_twin_has_the_runs_geometry_front_end_and_statistics(m2d_run):
    ckpt, _ = m2d_run
    saved = torch.load(ckpt, weights_only=True)
    twin = upstreams.load("random", like=str(ckpt))
    assert twin.encoder.config.to_dict() == saved["encoder_config"] == saved["config"]["encoder"]
    assert (twin.encoder.config.depth, twin.encoder.config.input_frames) == (3, 160)
    assert twin.frontend.config == LogMelConfig(**saved["frontend_config"]) == LogMelConfig(**saved["config"]["frontend"])
    assert saved["norm_stats"] == saved["config"]["data"]["norm_stats"]
    stats = twin.frontend.norm_stats.tolist()  # a float32 buffer of the recorded statistics
    assert stats == torch.tensor(saved["norm_stats"], dtype=torch.float32).tolist()
    assert stats != pytest.approx(list(DEFAULT_NORM_STATS))  # the corpus's statistics, not the fixed ones
    # exactly the front end of the pretrained upstream of the same checkpoint, and the same output shapes
    trained = upstreams.load("m2d", ckpt=ckpt).eval()
    assert torch.equal(twin.frontend.norm_stats, trained.frontend.norm_stats)
    assert twin.frontend.config == trained.frontend.config
    wavs = [torch.randn(16000) * 0.1, torch.randn(5000) * 0.1]
    with torch.no_grad():
        a, b = twin.eval()(wavs), trained(wavs)
    assert [h.shape for h in a.hidden_states] == [h.shape for h in b.hidden_states]
    assert torch.equal(a.lengths, b.lengths)
    assert (twin.sample_rate, twin.downsample_rate, twin.hidden_sizes) == (
        trained.sample_rate, trained.downsample_rate, trained.hidden_sizes)


def test_m2dx_with_init_twin_is_the_init_encoder(m2d_run, m2dx_run):
    init_ckpt, _ = m2d_run
    ckpt, step0 = m2dx_run
    twin = upstreams.load("random", like=str(ckpt))
    _assert_same_state(twin.encoder.state_dict(), step0)
    _assert_same_state(twin.encoder.state_dict(), load_init(init_ckpt).encoder)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["method"] == "m2dx" and saved["config"]["init"] == str(init_ckpt)
    # the init fixes architecture and statistics
    assert twin.encoder.config.to_dict() == torch.load(init_ckpt, weights_only=True)["encoder_config"]
    assert twin.frontend.norm_stats.tolist() == torch.tensor(saved["norm_stats"], dtype=torch.float32).tolist()
    assert saved["norm_stats"] == torch.load(init_ckpt, weights_only=True)["norm_stats"]


def test_identity_names_the_checkpoint_so_twins_never_share_a_cache_entry(m2d_run, m2dx_run):
    a, b = upstreams.load("random", like=str(m2d_run[0])), upstreams.load("random", like=str(m2dx_run[0]))
    ia, ib = a.describe(), b.describe()
    assert ia["name"] == "random"
    assert ia["options"]["like"] == str(m2d_run[0]) and ia["options"]["like_sha256"] == sha256_file(m2d_run[0])
    assert ia["checkpoint_sha256"] == sha256_file(m2d_run[0]) and ia["options"]["like_method"] == "m2d"
    assert ib["options"]["like_sha256"] == sha256_file(m2dx_run[0]) and ib["options"]["like_method"] == "m2dx"

    def material(i):  # what the embedding cache keys on
        return {k: i[k] for k in ("name", "options", "checkpoint_sha256")}

    assert material(ia) != material(ib)
    plain = upstreams.load("random", arch="tiny").describe()
    assert material(plain) != material(ia)
    assert material(upstreams.load("random", like=str(m2d_run[0])).describe()) == material(ia)  # stable


def test_loading_a_twin_leaves_the_global_rng_alone(m2d_run):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    upstreams.load("random", like=str(m2d_run[0]))
    assert torch.equal(torch.rand(3), expected)


def test_plain_random_is_unchanged():
    _assert_same_state(upstreams.load("random", arch="tiny").state_dict(), random_upstream("tiny", seed=0).state_dict())
    _assert_same_state(upstreams.load("random", arch="tiny", seed=2).state_dict(),
                       random_upstream("tiny", seed=2).state_dict())
    assert upstreams.load("random").encoder.config == random_upstream().encoder.config  # default arch mini


# -- refusals --------------------------------------------------------------------------------------
def test_seed_arch_and_ckpt_are_refused_with_like(m2d_run, tmp_path):
    ckpt = str(m2d_run[0])
    with pytest.raises(OptionError) as err:
        upstreams.load("random", like=ckpt, seed=0)
    assert "seed comes from the run" in _one_line_error(err)
    with pytest.raises(OptionError) as err:
        upstreams.load("random", like=ckpt, arch="tiny")
    assert "arch" in _one_line_error(err) and "like" in str(err.value)
    with pytest.raises(OptionError) as err:
        upstreams.load("random", ckpt=ckpt)
    assert "like=CKPT" in _one_line_error(err)


def test_missing_init_is_named(m2dx_run, tmp_path):
    saved = torch.load(m2dx_run[0], weights_only=True)
    gone = tmp_path / "moved-away" / "checkpoint.pt"
    saved["config"]["init"] = str(gone)
    path = tmp_path / "checkpoint.pt"
    torch.save(saved, path)
    with pytest.raises(CheckpointError) as err:
        upstreams.load("random", like=str(path))
    msg = _one_line_error(err)
    assert str(gone) in msg and "missing" in msg


def test_an_init_changed_since_the_run_is_caught(m2d_run, m2dx_run, tmp_path):
    init = torch.load(m2d_run[0], weights_only=True)
    key = next(iter(init["encoder"]))
    init["encoder"][key] = init["encoder"][key] + 1.0
    changed = tmp_path / "init.pt"
    torch.save(init, changed)
    saved = torch.load(m2dx_run[0], weights_only=True)
    saved["config"]["init"] = str(changed)
    path = tmp_path / "checkpoint.pt"
    torch.save(saved, path)
    with pytest.raises(CheckpointError) as err:
        upstreams.load("random", like=str(path))
    assert "has changed" in _one_line_error(err) and str(changed) in str(err.value)


def test_score_checkpoint_is_refused_with_its_base(tmp_path):
    base = tmp_path / "m2d.pt"
    path = tmp_path / "score.pt"
    torch.save({**random_upstream("tiny").bundle(), "method": "score", "config": {"base": "m2d"},
                "score": {"base": "m2d", "base_options": ["max_windows=8"], "base_checkpoint": str(base),
                          "base_checkpoint_sha256": "ab" * 32, "top_layers": 1}}, path)
    with pytest.raises(OptionError) as err:
        upstreams.load("random", like=str(path))
    msg = _one_line_error(err)
    assert "control of a SCORE run is" in msg and f"--upstream m2d --ckpt {base} -o max_windows=8" in msg


def _write_text(p: Path) -> Path:
    p.write_text("not a checkpoint\n")
    return p


def _write_bundle(p: Path) -> Path:
    torch.save(random_upstream("tiny").bundle(step=0), p)  # a weight bundle: no method/config
    return p


def _write_list(p: Path) -> Path:
    torch.save([1, 2, 3], p)
    return p


def _empty_dir(p: Path) -> Path:
    p.mkdir()
    return p


@pytest.mark.parametrize("make,error,needle", [
    (_write_text, CheckpointError, "not a readable torch checkpoint"),
    (lambda p: p, CheckpointError, "not found"),
    (_empty_dir, OptionError, "is a directory"),
    (_write_bundle, CheckpointError, "not a training checkpoint"),
    (_write_list, CheckpointError, "expected a dict"),
], ids=["text-file", "missing", "directory", "bundle-without-config", "not-a-dict"])
def test_bad_like_gives_one_clear_line(tmp_path, make, error, needle):
    target = make(tmp_path / "thing.pt")
    with pytest.raises(error) as err:
        upstreams.load("random", like=str(target))
    msg = _one_line_error(err)
    assert needle in msg and f"like={target}" in msg and "bench pretrain m2d|m2dx" in msg


def test_run_directory_points_at_its_checkpoint(m2d_run):
    with pytest.raises(OptionError) as err:
        upstreams.load("random", like=str(m2d_run[0].parent))
    assert f"pass {m2d_run[0]}" in _one_line_error(err)
    with pytest.raises(OptionError, match="needs a checkpoint path"):
        upstreams.load("random", like="")


def test_cli_reports_a_bad_like_in_one_line(tmp_path, capsys):
    from bench.cli import main

    code = main(["run", "--upstream", "random", "-o", f"like={tmp_path / 'nope.pt'}", "--task", "esc50",
                 "--profile", "tiny", "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "nope.pt" in lines[0] and "not found" in lines[0], err
