"""Rewrite result records written before records were strict JSON (bare `NaN` / `Infinity` tokens).

Older code averaged per-class accuracies over folds with `np.mean`, so a class missing from one
fold became NaN, and `json.dump` wrote it as a bare `NaN` that strict parsers (browsers, `jq`,
JavaScript) refuse. This rewrites each such record in place, atomically, exactly as the current
writer would: non-finite numbers become null and their paths are listed under
`non_finite_as_null`. Nothing else changes; records that are already strict are left alone.

    python scripts/strict_records.py results/mini
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from upstreams.fileio import atomic_write_json, finite_json


def strictify(results: Path) -> list[Path]:
    changed = []
    for path in sorted((results / "records").glob("*/*.json")):
        rec = json.loads(path.read_text())  # Python's parser reads the bare NaN tokens
        fixed, non_finite = finite_json(rec)
        if not non_finite:
            continue
        fixed["non_finite_as_null"] = sorted(set(fixed.get("non_finite_as_null") or []) | set(non_finite))
        atomic_write_json(path, fixed)
        changed.append(path)
    return changed


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not (Path(argv[0]) / "records").is_dir():
        print("usage: python scripts/strict_records.py RESULTS_DIR (a folder holding records/)", file=sys.stderr)
        return 2
    changed = strictify(Path(argv[0]))
    print(f"rewrote {len(changed)} record(s) as strict JSON")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
