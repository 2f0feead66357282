"""Any HEAR 2021 module as an upstream: `upstreams.load("hear:PKG.MODULE", model_file=PATH)`.

`bench run --upstream hear:hearbaseline.naive [-o model_file=PATH]` (or `--ckpt PATH`) imports the module,
calls its `load_model(model_file_path)` and wraps `get_timestamp_embeddings` / `get_scene_embeddings`
behind the suite's `Upstream` contract, so every task and protocol runs on it:

- input: the suite's 16 kHz float waveforms of any lengths, each resampled on its own to the module's
  `sample_rate` (`torchaudio.functional.resample`, default sinc kernel), then right-padded with zeros
  into the one `[n, samples]` batch HEAR takes;
- one layer: the timestamp embedding `[B, T, D]`; `downsample_rate` is the timestamp spacing in
  16 kHz input samples (a float when the module's hop is not a whole number of them), and
  `first_frame_center` the first timestamp;
- **valid frames** (the rule): item b keeps the frames whose timestamp lies within its own duration,
  `timestamp_ms <= 1000 * samples_b / 16000` (at least one frame); frames past every clip's end are
  dropped. For a module that frames the padded batch with zeros (hearbaseline) that is exactly what it
  returns for the clip alone; a module whose frames look ahead (a 25 ms window centred at 12.5 ms)
  sees up to half a window of batch padding in a shorter clip's last frames. `-o pad_batches=False`
  calls the module once per distinct length instead (no padding ever: every item's features are
  the module's own for that clip, at the cost of more calls);
- `scene_embeddings` is the module's own `get_scene_embeddings` (same batching);
- `describe()` names the module, its distribution and version, its sample rate, hop and embedding
  size, and the sha256 of the model file.

Every way a module can fail the API is one line, an `upstreams.errors` error: a module that does not
import (`UnknownUpstreamError`), one without the three HEAR functions, a model without `sample_rate`,
embeddings of the wrong shape, or timestamps that are not evenly spaced (`HearModuleError`).

TensorFlow stays out of the process (it and triton in one process can segfault, see
`upstreams/s3prl_compat.py`): a module that imports it fails with a line saying so.

librosa: HEAR 2021 modules were written for librosa 0.8, whose `librosa.filters.mel(sr, ...)` took
positional arguments (hearbaseline.naive's `load_model` calls `mel(44100, n_fft=..., n_mels=...)`).
librosa >= 0.10 makes them keyword-only, and librosa 0.9 imports `pkg_resources`, which current
setuptools no longer ships. When a HEAR module has imported librosa, `librosa.filters.mel` is wrapped
to map positional arguments onto those keywords (keyword calls pass through unchanged, so the filters
are the ones librosa computes for the same parameters).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import sys
from importlib import metadata
from pathlib import Path
from typing import Callable

import torch
import torchaudio
from torch import Tensor, nn

from .base import Upstream, UpstreamOutput, validate_waveforms
from .checkpoints import file_sha256
from .errors import CheckpointError, OptionError, UnknownUpstreamError, UpstreamError

__all__ = ["PREFIX", "HearModuleError", "HearUpstream", "factory_for", "VALID_FRAMES_RULE"]

PREFIX = "hear:"
INPUT_SR = 16000
HEAR_FUNCTIONS = ("load_model", "get_timestamp_embeddings", "get_scene_embeddings")
VALID_FRAMES_RULE = "frames whose timestamp lies within the clip: timestamp_ms <= 1000 * samples / 16000 (>= 1)"
PROBE_SECONDS = (2.0, 10.0)  # load-time probe lengths: the second only if the first gives < 2 timestamps


class HearModuleError(UpstreamError):
    """A HEAR module that does not honour the HEAR 2021 API (the message names the module and the problem)."""


def _block_tensorflow() -> None:
    if "tensorflow" not in sys.modules:
        sys.modules["tensorflow"] = None  # `import tensorflow` raises ImportError in this process


def _librosa_positional_compat() -> None:
    """Let `librosa.filters.mel(sr, n_fft, ...)` take positional arguments again (see the module docstring)."""
    if "librosa" not in sys.modules:
        return
    try:
        filters = importlib.import_module("librosa.filters")
    except Exception:  # noqa: BLE001 - a broken librosa is the module's problem, reported when it calls it
        return
    mel = getattr(filters, "mel", None)
    if mel is None or getattr(mel, "_bench_positional_compat", False):
        return
    try:
        params = list(inspect.signature(mel).parameters.values())
    except (TypeError, ValueError):
        return
    if not params or params[0].name != "sr" or params[0].kind is not inspect.Parameter.KEYWORD_ONLY:
        return  # librosa < 0.10: positional arguments already work
    names = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]

    @functools.wraps(mel)
    def compat(*args, **kwargs):
        if len(args) > len(names):
            raise TypeError(f"mel() takes at most {len(names)} arguments ({len(args)} given)")
        for key, value in zip(names, args):
            if key in kwargs:
                raise TypeError(f"mel() got multiple values for argument '{key}'")
            kwargs[key] = value
        return mel(**kwargs)

    compat._bench_positional_compat = True
    filters.mel = compat


def import_hear_module(module_name: str):
    spec = PREFIX + module_name
    if not module_name or any(not part.isidentifier() for part in module_name.split(".")):
        raise UnknownUpstreamError(f"upstream '{spec}': expected hear:PACKAGE.MODULE (a HEAR 2021 module's import "
                                   f"name, e.g. hear:hearbaseline.naive)")
    _block_tensorflow()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if "tensorflow" in str(exc).lower() or getattr(exc, "name", None) == "tensorflow":
            raise UnknownUpstreamError(
                f"upstream '{spec}': HEAR module '{module_name}' imports TensorFlow, which the suite keeps out "
                f"of its process (TensorFlow and triton in one process can segfault); evaluate it in its own "
                f"process, e.g. with hear-eval-kit") from None
        raise UnknownUpstreamError(
            f"upstream '{spec}': cannot import HEAR module '{module_name}' ({exc}); install the package that "
            f"provides it (e.g. pip install --no-deps hearbaseline==2021.1.1 librosa)") from None
    except Exception as exc:  # noqa: BLE001 - any import-time crash of third-party code: one line
        raise HearModuleError(f"upstream '{spec}': importing '{module_name}' failed: "
                              f"{type(exc).__name__}: {_first_line(exc)}") from None
    missing = [f for f in HEAR_FUNCTIONS if not callable(getattr(module, f, None))]
    if missing:
        raise HearModuleError(
            f"upstream '{spec}': '{module_name}' is not a HEAR 2021 module: it lacks {', '.join(missing)} "
            f"(a HEAR module defines {', '.join(HEAR_FUNCTIONS)})")
    _librosa_positional_compat()
    return module


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _module_identity(module) -> dict:
    top = module.__name__.split(".")[0]
    dists = metadata.packages_distributions().get(top) or []
    dist = dists[0] if dists else None
    version = None
    if dist is not None:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = None
    if version is None:
        version = getattr(module, "__version__", None) or getattr(sys.modules.get(top), "__version__", None)
    return {"module": module.__name__, "distribution": dist, "version": None if version is None else str(version)}


class HearUpstream(Upstream):
    """A HEAR 2021 module behind the upstream contract (see the module docstring for every rule)."""

    def __init__(self, module_name: str, model_file: str | Path | None = None, pad_batches: bool = True):
        super().__init__()
        if not isinstance(pad_batches, bool):
            raise OptionError(f"hear: option pad_batches={pad_batches!r}: choose True or False")
        self.name = PREFIX + module_name
        self.module_name = import_hear_module(module_name).__name__  # the module itself is looked up (deepcopy)
        self.pad_batches = pad_batches
        self.model_file = None if model_file in (None, "") else str(model_file)
        if self.model_file is not None and not Path(self.model_file).is_file():
            raise CheckpointError(f"{self.name}: model file not found: {self.model_file}")
        try:
            model = self.module.load_model(self.model_file or "")
        except Exception as exc:  # noqa: BLE001 - third-party code: one line naming what failed
            raise HearModuleError(f"{self.name}: load_model({self.model_file or ''!r}) failed: "
                                  f"{type(exc).__name__}: {_first_line(exc)}") from None
        sr = getattr(model, "sample_rate", None)
        if isinstance(sr, bool) or not isinstance(sr, (int, float)) or sr <= 0 or int(sr) != sr:
            raise HearModuleError(f"{self.name}: the model from load_model has no valid integer sample_rate "
                                  f"(got {sr!r}); HEAR models must declare one")
        self.hear_sample_rate = int(sr)
        if isinstance(model, nn.Module):
            self.model = model.eval()  # a submodule: .to(device) and .train()/.eval() reach it
        else:
            self._plain_model = model
        self.sample_rate = INPUT_SR
        self.checkpoint_path = self.model_file
        self.checkpoint_sha256 = file_sha256(self.model_file)
        self.identity = _module_identity(self.module)
        self._probe()

    # -- the HEAR model and its output checks -------------------------------------------------------------

    @property
    def module(self):
        """The HEAR module (from sys.modules: a module object cannot be deep-copied, as fine-tuning does)."""
        return sys.modules.get(self.module_name) or importlib.import_module(self.module_name)

    @property
    def hear_model(self):
        return self._modules["model"] if "model" in self._modules else self._plain_model

    def _probe(self) -> None:
        """Embedding size and frame rate from the module itself (2 clips of seeded noise)."""
        gen = torch.Generator().manual_seed(0)
        self.hidden_sizes = [0]
        self._hop_ms = None
        for seconds in PROBE_SECONDS:
            audio = 0.1 * torch.randn(2, int(seconds * self.hear_sample_rate), generator=gen)
            with torch.no_grad():
                emb, ts = self._call_timestamps(audio, probe=True)
            if emb.shape[1] >= 2:
                break
        else:
            raise HearModuleError(f"{self.name}: get_timestamp_embeddings returned fewer than 2 timestamps for "
                                  f"{PROBE_SECONDS[-1]:g} s of audio, so its frame rate is unknown")
        declared = getattr(self.hear_model, "timestamp_embedding_size", None)
        dim = int(emb.shape[2])
        if declared is not None and int(declared) != dim:
            raise HearModuleError(f"{self.name}: embeddings have {dim} dims but the model declares "
                                  f"timestamp_embedding_size={declared}")
        self.hidden_sizes = [dim]
        self._hop_ms = float(ts[0, 1] - ts[0, 0])
        self._first_ms = float(ts[0, 0])
        rate = self._hop_ms / 1000.0 * INPUT_SR
        self.downsample_rate = round(rate) if abs(rate - round(rate)) < 1e-6 * max(1.0, rate) else rate
        self.first_frame_center = self._first_ms / 1000.0

    def _call_timestamps(self, audio: Tensor, probe: bool = False) -> tuple[Tensor, Tensor]:
        try:
            result = self.module.get_timestamp_embeddings(audio, self.hear_model)
        except HearModuleError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise HearModuleError(f"{self.name}: get_timestamp_embeddings failed on a [{audio.shape[0]}, "
                                  f"{audio.shape[1]}] batch: {type(exc).__name__}: {_first_line(exc)}") from None
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise HearModuleError(f"{self.name}: get_timestamp_embeddings must return (embeddings, timestamps), "
                                  f"got {type(result).__name__}")
        emb, ts = (torch.as_tensor(x) for x in result)
        n = audio.shape[0]
        if emb.dim() != 3 or emb.shape[0] != n or emb.shape[1] < 1:
            raise HearModuleError(f"{self.name}: timestamp embeddings must be [n_sounds={n}, n_timestamps>=1, dim], "
                                  f"got shape {tuple(emb.shape)}")
        if not probe and emb.shape[2] != self.hidden_sizes[0]:
            raise HearModuleError(f"{self.name}: timestamp embeddings changed width from {self.hidden_sizes[0]} "
                                  f"to {emb.shape[2]}")
        if ts.dim() == 1 and ts.shape[0] == emb.shape[1]:
            ts = ts.unsqueeze(0).expand(n, -1)
        if tuple(ts.shape) != tuple(emb.shape[:2]):
            raise HearModuleError(f"{self.name}: timestamps must be [n_sounds, n_timestamps] = "
                                  f"{list(emb.shape[:2])}, got shape {tuple(ts.shape)}")
        ts = ts.detach().to("cpu", torch.float64)
        if not bool(torch.isfinite(ts).all()):
            raise HearModuleError(f"{self.name}: timestamps contain NaN or infinite values")
        if ts.shape[1] >= 2:
            diffs = ts[:, 1:] - ts[:, :-1]
            hop = float(diffs[0, 0]) if probe else self._hop_ms
            # 1 % of the hop (frames placed on whole samples), plus float32 rounding of large timestamps
            tol = 1e-2 * abs(hop) + 8 * torch.finfo(torch.float32).eps * float(ts.abs().max())
            if hop <= 0 or float((diffs - hop).abs().max()) > tol:
                raise HearModuleError(
                    f"{self.name}: timestamps are not evenly spaced (spacings from {float(diffs.min()):g} to "
                    f"{float(diffs.max()):g} ms{'' if probe else f', expected {hop:g} ms'}); the suite needs one "
                    f"frame rate per module")
        return emb, ts

    # -- the upstream contract ----------------------------------------------------------------------------

    def _resampled(self, wavs: list[Tensor]) -> list[Tensor]:
        if self.hear_sample_rate == INPUT_SR:
            return wavs
        return [torchaudio.functional.resample(w, INPUT_SR, self.hear_sample_rate) for w in wavs]

    def _groups(self, wavs: list[Tensor]) -> list[list[int]]:
        if self.pad_batches:
            return [list(range(len(wavs)))]
        by_length: dict[int, list[int]] = {}
        for i, w in enumerate(wavs):
            by_length.setdefault(w.numel(), []).append(i)
        return list(by_length.values())

    def valid_frames(self, timestamps_ms: Tensor, num_samples: int) -> int:
        """The rule: frames whose timestamp lies within the clip (`num_samples` at 16 kHz), at least one."""
        duration_ms = 1000.0 * num_samples / INPUT_SR
        return max(1, int((timestamps_ms <= duration_ms + 1e-6).sum()))

    def encode(self, wavs: list[Tensor]) -> UpstreamOutput:
        resampled = self._resampled(wavs)
        frames: list[Tensor | None] = [None] * len(wavs)
        for idx in self._groups(wavs):
            audio = torch.nn.utils.rnn.pad_sequence([resampled[i] for i in idx], batch_first=True)
            emb, ts = self._call_timestamps(audio)
            emb = emb.to(self.device, torch.float32)
            for j, i in enumerate(idx):
                frames[i] = emb[j, : self.valid_frames(ts[j], wavs[i].numel())]
        lengths = torch.tensor([f.shape[0] for f in frames], dtype=torch.long)
        return UpstreamOutput((torch.nn.utils.rnn.pad_sequence(frames, batch_first=True),), lengths)

    def num_frames(self, num_samples: int) -> int:
        hop = self.downsample_rate / INPUT_SR * 1000.0
        duration_ms = 1000.0 * num_samples / INPUT_SR
        return max(1, math.floor((duration_ms - self._first_ms) / hop + 1e-9) + 1)

    def scene_embeddings(self, wavs, layer: int = -1) -> Tensor:
        """The module's own `get_scene_embeddings` (one layer: `layer` must be 0 or -1)."""
        if layer not in (0, -1):
            raise ValueError(f"{self.name} has one layer; layer={layer} does not exist")
        wavs = [w.to(self.device) for w in validate_waveforms(wavs)]
        resampled = self._resampled(wavs)
        out: list[Tensor | None] = [None] * len(wavs)
        for idx in self._groups(wavs):
            audio = torch.nn.utils.rnn.pad_sequence([resampled[i] for i in idx], batch_first=True)
            try:
                emb = torch.as_tensor(self.module.get_scene_embeddings(audio, self.hear_model))
            except Exception as exc:  # noqa: BLE001
                raise HearModuleError(f"{self.name}: get_scene_embeddings failed: {type(exc).__name__}: "
                                      f"{_first_line(exc)}") from None
            if emb.dim() != 2 or emb.shape[0] != len(idx):
                raise HearModuleError(f"{self.name}: scene embeddings must be [n_sounds={len(idx)}, dim], "
                                      f"got shape {tuple(emb.shape)}")
            for j, i in enumerate(idx):
                out[i] = emb[j].to(self.device, torch.float32)
        return torch.stack(out)

    def describe(self) -> dict:
        d = super().describe()
        d["hear"] = {
            **self.identity,
            "sample_rate": self.hear_sample_rate,
            "timestamp_hop_ms": self._hop_ms,
            "first_timestamp_ms": self._first_ms,
            "embedding_size": self.hidden_sizes[0],
            "model_file_sha256": self.checkpoint_sha256,
            "resampling": (f"torchaudio.functional.resample {INPUT_SR} -> {self.hear_sample_rate} Hz, per clip"
                           if self.hear_sample_rate != INPUT_SR else "none (the module takes 16 kHz)"),
            "batching": "zero-padded batch" if self.pad_batches else "one call per distinct clip length",
            "valid_frames": VALID_FRAMES_RULE,
        }
        return d


def factory_for(name: str) -> Callable[..., HearUpstream]:
    """The registry's factory for `hear:PKG.MODULE` (`ckpt` is accepted as the model file too)."""
    module_name = name[len(PREFIX):] if name.startswith(PREFIX) else name

    def hear_module(ckpt=None, model_file: str | None = None, pad_batches: bool = True) -> HearUpstream:
        if ckpt is not None and model_file not in (None, "") and str(ckpt) != str(model_file):
            raise OptionError(f"{PREFIX}{module_name}: give the model file once (--ckpt or -o model_file=PATH)")
        return HearUpstream(module_name, model_file=model_file or ckpt, pad_batches=pad_batches)

    hear_module.__doc__ = (f"HEAR 2021 module '{module_name}' (its timestamp embeddings, one layer); "
                           f"model_file: the path its load_model takes")
    return hear_module
