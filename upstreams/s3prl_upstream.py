"""Any s3prl 0.4.18 upstream as an upstream: `upstreams.load("s3prl:NAME", ckpt=PATH)`.

`bench run --upstream s3prl:NAME [--ckpt PATH] [-o KEY=VALUE]` builds `NAME` from s3prl's own registry
(`s3prl.hub`, imported after `upstreams.s3prl_compat.patch()`) and exposes every one of its
`hidden_states` as a layer, with `get_downsample_rates('hidden_states')` as `downsample_rate`.

Nothing is downloaded. In s3prl's hub, a named entry such as `hubert_base` sets `ckpt` to a URL itself
(overwriting any `ckpt` passed in) and downloads it; the `<family>_local` / `<family>_custom` entries
take a local path. So:
- without `--ckpt`, only the weight-free baselines build (`WEIGHT_FREE`: fbank, fbank_no_cmvn, mel,
  mfcc, linear, spectrogram, baseline; `baseline_local` and `stft_mag` with `-o model_config=YAML`);
  any other name fails with one line saying to pass `--ckpt PATH`, before s3prl's function is called;
- with `--ckpt PATH`, a `_local`/`_custom` name is called with it, and any other name is routed to
  the local entry its hub function delegates to (`hubert_base` -> `hubert_custom`,
  `distilhubert` -> `distiller_local`, `tera` -> `tera_local`, ...; found by reading the hub
  functions' calls; `customized_upstream`, s3prl's slot for your own expert, takes it directly);
  families whose hub has no local entry (byol_a, passt, ...) are refused.
  Options go to that entry: `-o legacy=True` (a fairseq checkpoint loaded with fairseq) or
  `-o fairseq=True` (converted first) for HuBERT / wav2vec 2.0 style families;
- while s3prl builds the model, its download function and torch.hub's raise instead of fetching.

Valid lengths. s3prl experts pad a batch internally, and several make an item's features depend on
what it is batched with (wav2vec 2.0 base's group norm sees the padding; the torchaudio-preprocessor
baselines cut lengths by the first item's ratio). By default each waveform is encoded on its own, so
the suite's batch-consistency guarantee holds and each item's valid frames are exactly the frames the
expert returns for it (the shortest layer's count when layers differ). `-o per_item=False` passes the
batch to the expert in one call (SUPERB's way) and takes s3prl's Featurizer rule,
`round(samples / downsample_rate)`, capped at the padded length.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import inspect
import textwrap
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from .base import Upstream, UpstreamOutput
from .checkpoints import file_sha256
from .errors import CheckpointError, OptionError, UnknownUpstreamError, UpstreamError

__all__ = ["PREFIX", "WEIGHT_FREE", "CONFIG_ONLY", "S3prlHubUpstream", "factory_for", "plan", "hub_entries"]

PREFIX = "s3prl:"
SAMPLE_RATE = 16000
# hub entries that build without weights (their configs ship inside s3prl)
WEIGHT_FREE = ("fbank", "fbank_no_cmvn", "mel", "mfcc", "linear", "spectrogram", "baseline")
# entries that need only a local feature config (-o model_config=YAML), no weights
CONFIG_ONLY = ("baseline_local", "stft_mag")
LOCAL_SUFFIXES = ("_custom", "_local")
# s3prl's slot for your own expert (upstream/example): it passes ckpt / model_config straight to the expert
DIRECT_CKPT = ("customized_upstream",)


class S3prlUpstreamError(UpstreamError):
    """s3prl could not build or run an upstream (the message says which and why, in one line)."""


def _hub():
    from . import s3prl_compat

    s3prl_compat.patch()
    try:
        from s3prl import hub
    except Exception as exc:  # noqa: BLE001 - an unimportable s3prl: one line
        raise S3prlUpstreamError(f"s3prl 0.4.18 does not import here ({type(exc).__name__}: {exc}); "
                                 f"install it with pip install 's3prl==0.4.18'") from None
    return hub


def hub_entries() -> dict[str, Callable]:
    """s3prl's upstream registry: the hub's public functions defined in `s3prl.upstream.*` modules."""
    hub = _hub()
    return {n: f for n in hub.options() if inspect.isfunction(f := getattr(hub, n, None))
            and f.__module__.startswith("s3prl.upstream.") and f.__module__.endswith(".hubconf")}


def _callees(fn: Callable) -> list[tuple[str, Callable]]:
    """Hub functions that `fn`'s body calls by name, in source order (how named entries delegate)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return []
    out, seen = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in seen:
            target = fn.__globals__.get(node.func.id)
            if inspect.isfunction(target) and target.__module__.startswith("s3prl.upstream.") \
                    and target.__module__.endswith(".hubconf") and not node.func.id.startswith("_"):
                seen.add(node.func.id)
                out.append((node.func.id, target))
    return out


def _local_entry(name: str, fn: Callable) -> tuple[str, Callable] | None:
    """The `_custom`/`_local` entry that `name` ends up calling (breadth-first through its delegations)."""
    frontier, seen = [(name, fn)], {name}
    for _depth in range(6):
        nxt = []
        for _n, f in frontier:
            for callee_name, callee in _callees(f):
                if callee_name.endswith(LOCAL_SUFFIXES):
                    return callee_name, callee
                if callee_name not in seen:
                    seen.add(callee_name)
                    nxt.append((callee_name, callee))
        frontier = nxt
    return None


def plan(name: str, ckpt: str | None, entries: dict[str, Callable] | None = None) -> tuple[str, Callable, dict]:
    """(entry name, hub function, kwargs) that builds `name` from local files only; refusals are one line."""
    entries = hub_entries() if entries is None else entries
    spec = PREFIX + name
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=4, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UnknownUpstreamError(f"unknown s3prl upstream '{name}' ({spec}); {hint}s3prl 0.4.18 has "
                                   f"{len(entries)}: python -c 'from upstreams.s3prl_upstream import hub_entries; "
                                   f"print(*hub_entries())'")
    fn = entries[name]
    if name in WEIGHT_FREE or name in CONFIG_ONLY:
        if ckpt is not None:
            raise OptionError(f"{spec} has no weights; drop --ckpt"
                              + (" (its feature config is -o model_config=YAML)" if name in CONFIG_ONLY else ""))
        return name, fn, {}
    if ckpt is None:
        if name in DIRECT_CKPT or name.endswith(LOCAL_SUFFIXES):
            raise CheckpointError(f"{spec} loads local weights: pass --ckpt PATH")
        raise CheckpointError(
            f"{spec} would download its weights and nothing is downloaded here: pass --ckpt PATH "
            f"(a local checkpoint for it); weight-free s3prl upstreams: {', '.join(WEIGHT_FREE)}")
    if name.endswith(LOCAL_SUFFIXES + ("_url",)):
        # `_url` entries pass a local path straight through to their `_local` entry
        local = (name, fn) if name.endswith(LOCAL_SUFFIXES) else (_local_entry(name, fn) or (name, fn))
    else:
        local = (name, fn) if name in DIRECT_CKPT else _local_entry(name, fn)
    if local is None:
        raise CheckpointError(f"{spec}: s3prl 0.4.18 has no local-checkpoint entry for it (its hub function "
                              f"always downloads), so it cannot run here")
    return local[0], local[1], {"ckpt": str(ckpt)}


@contextlib.contextmanager
def _no_downloads(spec: str):
    """While s3prl builds a model, anything that would fetch a URL raises instead."""
    import torch.hub as th
    from s3prl.util import download as dl

    def refuse(*args, **_kwargs):
        url = next((a for a in args if isinstance(a, str) and "://" in a), "a URL")
        raise CheckpointError(f"{spec}: s3prl tried to download {url}; nothing is downloaded here: "
                              f"pass --ckpt PATH to local weights")

    saved = [(dl, "_download", dl._download), (th, "download_url_to_file", th.download_url_to_file),
             (th, "load_state_dict_from_url", th.load_state_dict_from_url), (th, "load", th.load)]
    for obj, attr, _ in saved:
        setattr(obj, attr, refuse)
    try:
        yield
    finally:
        for obj, attr, orig in saved:
            setattr(obj, attr, orig)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class S3prlHubUpstream(Upstream):
    """An s3prl hub upstream behind the upstream contract (see the module docstring)."""

    def __init__(self, name: str, ckpt: str | Path | None = None, per_item: bool = True, **options):
        super().__init__()
        if not isinstance(per_item, bool):
            raise OptionError(f"{PREFIX}{name}: option per_item={per_item!r}: choose True or False")
        self.name = PREFIX + name
        self.s3prl_name = name
        self.per_item = per_item
        ckpt = None if ckpt is None else str(ckpt)
        entry_name, fn, kwargs = plan(name, ckpt)
        self.entry = entry_name
        try:
            with _no_downloads(self.name):
                expert = fn(**kwargs, **options)
        except UpstreamError:
            raise
        except TypeError as exc:
            raise OptionError(f"{self.name}: s3prl's {entry_name} rejected the options "
                              f"{sorted(options) or '(none)'}: {_one_line(exc)}") from None
        except (AssertionError, FileNotFoundError) as exc:
            raise CheckpointError(f"{self.name}: s3prl's {entry_name} could not load {ckpt or 'its config'} "
                                  f"({_one_line(exc) if str(exc) else 'a file check failed'})") from None
        except ImportError as exc:
            raise S3prlUpstreamError(f"{self.name}: s3prl's {entry_name} needs a package that is not installed "
                                     f"({_one_line(exc)})") from None
        except Exception as exc:  # noqa: BLE001 - third-party code: one line naming what failed
            raise S3prlUpstreamError(f"{self.name}: s3prl's {entry_name} failed to build: {_one_line(exc)}"
                                     + (f" (is {ckpt} a checkpoint for this family?)" if ckpt else "")) from None
        self.expert = expert.eval()
        self.sample_rate = SAMPLE_RATE
        self.checkpoint_path = ckpt
        self.checkpoint_sha256 = file_sha256(ckpt)
        rates = self.expert.get_downsample_rates("hidden_states")
        if isinstance(rates, (list, tuple)):
            if len(set(rates)) != 1:
                raise S3prlUpstreamError(f"{self.name}: layers have different frame rates {list(rates)}; the "
                                         f"suite needs one")
            rates = rates[0]
        self.downsample_rate = int(rates)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            states = self._states([0.1 * torch.randn(SAMPLE_RATE, generator=gen)])
        self.hidden_sizes = [int(h.shape[-1]) for h in states]

    def _states(self, wavs: list[Tensor]) -> list[Tensor]:
        out = self.expert(wavs)
        states = out["hidden_states"] if isinstance(out, dict) or hasattr(out, "__getitem__") else None
        if not isinstance(states, (list, tuple)) or not states or \
                any(not isinstance(h, Tensor) or h.dim() != 3 or h.shape[0] != len(wavs) for h in states):
            raise S3prlUpstreamError(f"{self.name}: the expert's hidden_states are not a list of [B, T, D] tensors")
        return list(states)

    def encode(self, wavs: list[Tensor]) -> UpstreamOutput:
        if self.per_item:
            items = []
            for w in wavs:
                states = self._states([w])
                t = min(h.shape[1] for h in states)
                items.append([h[0, :t] for h in states])
            lengths = torch.tensor([it[0].shape[0] for it in items], dtype=torch.long)
            hidden = tuple(torch.nn.utils.rnn.pad_sequence([it[layer] for it in items], batch_first=True)
                           for layer in range(len(items[0])))
            return UpstreamOutput(hidden, lengths)
        states = self._states(wavs)
        t = min(h.shape[1] for h in states)
        lengths = torch.tensor([min(t, max(1, round(w.numel() / self.downsample_rate))) for w in wavs])
        return UpstreamOutput(tuple(h[:, :t] for h in states), lengths)

    def describe(self) -> dict:
        d = super().describe()
        try:
            from importlib.metadata import version

            s3prl_version = version("s3prl")
        except Exception:  # noqa: BLE001
            s3prl_version = None
        d["s3prl"] = {"name": self.s3prl_name, "entry": self.entry, "version": s3prl_version,
                      "expert": f"{type(self.expert).__module__}.{type(self.expert).__qualname__}",
                      "per_item": self.per_item,
                      "valid_frames": ("frames the expert returns for the waveform alone" if self.per_item else
                                       "round(samples / downsample_rate), capped at the padded length")}
        return d


def factory_for(name: str) -> Callable[..., S3prlHubUpstream]:
    """The registry's factory for `s3prl:NAME`; extra options go to s3prl's hub function."""
    s3prl_name = name[len(PREFIX):] if name.startswith(PREFIX) else name

    def s3prl_upstream(ckpt=None, per_item: bool = True, **options) -> S3prlHubUpstream:
        return S3prlHubUpstream(s3prl_name, ckpt=ckpt, per_item=per_item, **options)

    s3prl_upstream.__doc__ = (f"s3prl 0.4.18 upstream '{s3prl_name}' (all hidden states); "
                              + ("weight-free" if s3prl_name in WEIGHT_FREE else "needs --ckpt PATH (local weights)"))
    return s3prl_upstream
