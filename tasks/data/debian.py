"""Real sounds from Debian `main` packages, fetched without installing them, with pinned provenance.

`apt-get download PKG && dpkg-deb -x PKG.deb DIR` extracts a package in seconds without root.
Every package version and every source file a dataset uses is recorded so the dataset manifest
pins exactly what went in. A user without apt can drop the `.deb` files into `<cache>/debs/`.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from upstreams.fileio import atomic_directory, sha256_file

__all__ = ["MissingToolError", "require_tool", "DebianSources", "PackagePin"]


class MissingToolError(RuntimeError):
    """A system tool or package the build needs is absent; the message says how to install it."""


def require_tool(executable: str, apt_package: str | None = None) -> str:
    """Return the path of `executable` or raise with the exact install command."""
    found = shutil.which(executable)
    if found:
        return found
    pkg = apt_package or executable
    raise MissingToolError(
        f"'{executable}' is not installed but the data build needs it: run `sudo apt-get install -y {pkg}` "
        f"(or `make setup`, which installs every system package the suite uses)"
    )


@dataclass(frozen=True)
class PackagePin:
    package: str
    version: str
    deb_sha256: str


@dataclass
class DebianSources:
    """Fetches and extracts Debian packages into `cache_dir`, remembering versions and files used."""

    cache_dir: Path
    pins: dict[str, PackagePin] = field(default_factory=dict)
    files: dict[str, dict] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.cache_dir = Path(self.cache_dir)

    # -- fetching ---------------------------------------------------------------------------
    def _deb_path(self, package: str) -> Path:
        debs = self.cache_dir / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        existing = sorted(debs.glob(f"{package}_*.deb"))
        if existing:
            return existing[-1]
        apt = shutil.which("apt-get")
        if apt is None:
            raise MissingToolError(
                f"cannot fetch Debian package '{package}': apt-get is not available. Download "
                f"{package}_<version>_all.deb from https://packages.debian.org/bookworm/{package} "
                f"and place it in {debs}"
            )
        proc = subprocess.run([apt, "download", package], cwd=debs, capture_output=True, text=True)
        if proc.returncode != 0:
            raise MissingToolError(
                f"`apt-get download {package}` failed: {proc.stderr.strip().splitlines()[-1:]} - run "
                f"`sudo apt-get update` and retry, or place the .deb in {debs}"
            )
        existing = sorted(debs.glob(f"{package}_*.deb"))
        if not existing:
            raise MissingToolError(f"`apt-get download {package}` produced no .deb in {debs}")
        return existing[-1]

    def extract(self, package: str) -> Path:
        """Return a directory holding the extracted contents of `package` (cached across builds)."""
        require_tool("dpkg-deb", "dpkg")
        deb = self._deb_path(package)
        version = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dest = self.cache_dir / "extracted" / f"{package}_{version}"
        if not (dest / ".complete").exists():
            with atomic_directory(dest) as tmp:
                subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
                (tmp / ".complete").write_text(version)
        with self._lock:
            self.pins[package] = PackagePin(package, version, sha256_file(deb))
        return dest

    # -- provenance -------------------------------------------------------------------------
    def use(self, package: str, path: Path, licence: str | None = None, credit: str | None = None) -> Path:
        """Record that `path` (inside an extracted package) was used; returns it unchanged."""
        root = self.cache_dir / "extracted"
        try:
            rel = str(Path(path).relative_to(root))
        except ValueError:
            rel = str(path)
        entry = {"package": package, "path": rel, "sha256": sha256_file(path)}
        if licence:
            entry["licence"] = licence
        if credit:
            entry["credit"] = credit
        with self._lock:
            self.files[rel] = entry
        return Path(path)

    def provenance(self) -> dict:
        """Deterministic summary for the manifest: pinned packages and used files, sorted."""
        return {
            "debian_packages": {
                p.package: {"version": p.version, "deb_sha256": p.deb_sha256}
                for p in sorted(self.pins.values(), key=lambda p: p.package)
            },
            "source_files": [self.files[k] for k in sorted(self.files)],
        }
