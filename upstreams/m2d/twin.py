"""`random -o like=CKPT`: the exact step-0 twin of the pretraining run that wrote CKPT.

The control of a pretrained checkpoint is not "some random ViT" but that run's own architecture,
front end and normalisation statistics with the weights it started from. A training checkpoint of
this suite stores `method` and its full resolved `config`, which is everything step 0 depends on,
so the twin rebuilds step 0 with `pretrain.initial_m2d_model` - the function the training recipes
themselves call - and takes the encoder from it:

- m2d / m2dx run without `init`: `torch.manual_seed(train.seed)` then the run's model class; the
  encoder equals the run's step 0 bit for bit.
- m2d / m2dx run with `init`: the init checkpoint's encoder (the file must still exist at the path
  the run recorded; when the run distilled from it, its frozen teacher - saved in CKPT - is checked
  against the file, so an init that was overwritten since is caught instead of silently used).
- `score` run: refused. Its step 0 is its base upstream unchanged (a pretrained model, not a random
  one), so its control is that base, run under its own name; the error names the exact command.

The front end and statistics are CKPT's bundle keys, i.e. what `m2d --ckpt CKPT` uses. The
upstream's identity (`describe()`) names CKPT: `options` carry `like` (the path) and `like_sha256`,
and `checkpoint`/`checkpoint_sha256` are CKPT's, so twins of different checkpoints never share a
result row or an embedding-cache entry. CKPT's weights are never loaded into the twin.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoints import load_state_strict, read_checkpoint
from ..errors import CheckpointError, OptionError
from ..fileio import sha256_file
from ..frontend import LogMelConfig
from ..runs import CHECKPOINT_NAME
from .encoder import EncoderConfig
from .upstream import M2DUpstream

__all__ = ["twin_of", "step0_encoder_state"]

_WHAT = f"pass the {CHECKPOINT_NAME} that `bench pretrain m2d|m2dx` wrote"


def _quiet(_msg: str) -> None:
    pass


def _looks_like_torch_file(path: Path) -> bool:
    """`torch.save` writes a zip archive (or, in the legacy format, a pickle: first byte 0x80)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:4] == b"PK\x03\x04" or head[:1] == b"\x80"


def _read(path: Path) -> dict:
    if not str(path) or str(path) == ".":
        raise OptionError(f"like= needs a checkpoint path; {_WHAT}")
    if path.is_dir():
        inside = path / CHECKPOINT_NAME
        hint = f"pass {inside}" if inside.is_file() else _WHAT
        raise OptionError(f"like={path} is a directory; {hint}")
    if not path.exists():
        raise CheckpointError(f"like={path}: checkpoint not found; {_WHAT}")
    if not _looks_like_torch_file(path):  # a text file would otherwise read as a refused pickle
        raise CheckpointError(f"like={path}: not a readable torch checkpoint (neither a torch zip nor a pickle); {_WHAT}")
    try:
        return read_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"like={exc}; {_WHAT}") from exc


def _score_refusal(path: Path, saved: dict) -> OptionError:
    prov = saved.get("score") if isinstance(saved.get("score"), dict) else {}
    cmd = f"--upstream {prov.get('base', '<base>')}"
    if prov.get("base_checkpoint"):
        cmd += f" --ckpt {prov['base_checkpoint']}"
    cmd += "".join(f" -o {opt}" for opt in prov.get("base_options") or ())
    sha = prov.get("base_checkpoint_sha256")
    return OptionError(
        f"like={path} is a SCORE run: its step 0 is its base upstream unchanged, so the control of a SCORE run is "
        f"that base - run `{cmd}`" + (f" (base checkpoint sha256 {sha[:16]})" if sha else "")
    )


def _run_config(path: Path, saved: dict):
    """(method name, resolved run config dataclass) of a training checkpoint."""
    method = saved.get("method")
    if not isinstance(saved.get("config"), dict) or not isinstance(method, str):
        raise CheckpointError(
            f"like={path} is not a training checkpoint of this suite (it has no 'method'/'config', so it does not "
            f"record how its step 0 was made: a weight bundle, an export or an official checkpoint); {_WHAT}"
        )
    if method == "score":
        raise _score_refusal(path, saved)
    if method not in ("m2d", "m2dx"):
        raise CheckpointError(f"like={path} is a '{method}' run; the random twin exists for m2d and m2dx runs")
    from ..training.config import ConfigError, from_dict
    from ..training.run import get_method

    try:
        cfg = from_dict(get_method(method).config_type, saved["config"])
    except ConfigError as exc:
        raise CheckpointError(f"like={path}: its saved {method} config does not load ({exc})") from exc
    return method, cfg


def _check_teacher(path: Path, cfg, saved: dict, encoder_state: dict) -> None:
    """An m2dx run that distilled from its init holds that init's encoder, frozen, as `teacher.*`."""
    off = getattr(cfg, "offline", None)
    model = saved.get("model")
    if off is None or off.teacher != "init" or off.distill_weight <= 0 or not isinstance(model, dict):
        return
    teacher = {k[len("teacher."):]: v for k, v in model.items() if k.startswith("teacher.")}
    if teacher.keys() != encoder_state.keys():
        return
    if any(not torch.equal(teacher[k], encoder_state[k]) for k in teacher):
        raise CheckpointError(
            f"like={path}: the run's init {cfg.init} has changed since the run started (it no longer matches the "
            f"teacher the run loaded from it); restore the original init file to rebuild step 0"
        )


def step0_encoder_state(path: str | Path) -> tuple[dict, dict]:
    """(encoder state dict at step 0, the checkpoint dict) of the m2d/m2dx run that wrote `path`."""
    from .pretrain import initial_m2d_model, load_init

    path = Path(path)
    saved = _read(path)
    _method, cfg = _run_config(path, saved)
    init = None
    if cfg.init:
        if not Path(cfg.init).expanduser().is_file():
            raise CheckpointError(
                f"like={path}: the run started from init={cfg.init}, which is missing; its step-0 encoder is that "
                f"checkpoint's - restore the file at that path"
            )
        init = load_init(Path(cfg.init).expanduser())
    labels = saved.get("label_names") or []
    # fork: loading an upstream must not reseed the caller's global RNG
    with torch.random.fork_rng(devices=[]):
        model = initial_m2d_model(cfg, init, _quiet, num_classes=len(labels))
    state = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}
    if init is not None:
        _check_teacher(path, cfg, saved, state)
    return state, saved


def twin_of(path: str | Path, max_windows: int = 64) -> M2DUpstream:
    """The `random` upstream with the step-0 weights of the run that wrote `path` (see module docstring)."""
    state, saved = step0_encoder_state(path)
    path = Path(path)
    try:
        enc_cfg = EncoderConfig.from_dict(saved["encoder_config"])
        fe_cfg = LogMelConfig(**saved["frontend_config"])
        stats = tuple(float(x) for x in saved["norm_stats"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"like={path}: the checkpoint lacks a valid encoder/front-end bundle ({exc}); {_WHAT}") from exc
    cfg = saved["config"]
    if (enc_cfg.to_dict() != EncoderConfig.from_dict(cfg["encoder"]).to_dict()
            or fe_cfg != LogMelConfig(**cfg["frontend"])
            or list(stats) != [float(x) for x in cfg["data"]["norm_stats"]]):
        raise CheckpointError(f"like={path}: its bundle keys disagree with its run config (a hand-edited file?); {_WHAT}")
    with torch.random.fork_rng(devices=[]):
        model = M2DUpstream(enc_cfg, fe_cfg, stats, max_windows=max_windows)
    load_state_strict(model.encoder, state, f"step 0 of {path}")
    model.checkpoint_path = str(path)
    model.checkpoint_sha256 = sha256_file(path)
    model.options = {"like": str(path), "like_sha256": model.checkpoint_sha256, "like_method": saved["method"],
                     "like_seed": int(cfg["train"]["seed"])}
    return model
