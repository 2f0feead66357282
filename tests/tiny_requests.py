"""One way for tests to build a `bench run` request on the tiny profile (results and cache in tmp_path)."""

from __future__ import annotations

from bench.run import RunRequest

TINY_RANDOM = {"upstream": "random", "upstream_options": {"arch": "tiny"}}


def tiny_request(tiny_root, tmp_path, **kw) -> RunRequest:
    """A quiet RunRequest on the tiny data; `kw` overrides (the upstream defaults to the tiny random ViT)."""
    base = dict(**TINY_RANDOM, profile="tiny", data_root=str(tiny_root), results=str(tmp_path / "results"),
                cache_root=str(tmp_path / "cache"), progress=False)
    base.update(kw)
    return RunRequest(**base)
