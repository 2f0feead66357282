"""Two pretraining runs that start together build their corpus's log-mel cache once, not twice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


from tone_corpus import write_tone_corpus

REPO = Path(__file__).resolve().parents[1]

_BUILD = """
import sys
from upstreams.frontend import LogMelConfig
from upstreams.m2d.data import load_features
f = load_features(sys.argv[1], LogMelConfig(), sys.argv[2], log=lambda m: print(m, flush=True))
print("frames", f.frames.shape[0], float(f.frames.float().sum()), flush=True)
"""


def test_concurrent_runs_build_the_log_mel_cache_once(tmp_path):
    index = write_tone_corpus(tmp_path, n=40, len_cycle=1)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", _BUILD, str(index), str(tmp_path / "cache")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum("building the log-mel cache" in o for o in outs) == 1, outs
    frames = {ln for o in outs for ln in o.splitlines() if ln.startswith("frames")}
    assert len(frames) == 1  # both read the same array
    assert len([d for d in (tmp_path / "cache").iterdir() if d.is_dir()]) == 1  # no leftover temp folder
