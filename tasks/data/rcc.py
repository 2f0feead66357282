"""Read members of Qt binary resource files (`.rcc`) without Qt.

gcompris-qt ships its sounds (farm animals, rain, doors, trains...) only inside `.rcc` bundles
made by Qt's `rcc -binary`. Installing Qt tools to unpack 186 bundles would add a large system
dependency for a few dozen files, so this module reads the documented, stable layout directly:

    header   "qres", u32 version (1-3), u32 tree offset, u32 data offset, u32 names offset,
             [u32 flags, version >= 3]                                        (big-endian)
    tree     one node per entry, 14 bytes (+ u64 mtime from version 2 on):
             u32 name offset, u16 flags, then for a directory (flags & 2)
             u32 child count + u32 first child index, else u16 territory + u16 language +
             u32 data offset
    names    u16 length, u32 hash, UTF-16BE characters
    data     u32 length, payload; zlib-compressed payloads (flags & 1) start with the u32
             uncompressed size; zstd payloads (flags & 4, Qt >= 5.13) are rejected with a clear error

`members()` walks the tree and yields `(path, bytes)` for every file. Nothing is executed or
written; malformed bundles raise `RccError` naming the file.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Iterator

__all__ = ["RccError", "members", "member_names"]

_DIR = 0x02
_ZLIB = 0x01
_ZSTD = 0x04


class RccError(ValueError):
    """A file that is not a readable Qt binary resource bundle."""


class _Rcc:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.data = self.path.read_bytes()
        d = self.data
        if len(d) < 20 or d[:4] != b"qres":
            raise RccError(f"{self.path}: not a Qt resource bundle (missing 'qres' magic)")
        self.version, self.tree, self.payload, self.names = struct.unpack(">IIII", d[4:20])
        if self.version not in (1, 2, 3):
            raise RccError(f"{self.path}: unsupported rcc format version {self.version}")
        self.node_size = 14 if self.version == 1 else 22

    def _u(self, fmt: str, off: int) -> tuple:
        try:
            return struct.unpack_from(fmt, self.data, off)
        except struct.error as exc:
            raise RccError(f"{self.path}: truncated bundle (offset {off})") from exc

    def name(self, offset: int) -> str:
        (length,) = self._u(">H", self.names + offset)
        start = self.names + offset + 6
        raw = self.data[start : start + 2 * length]
        if len(raw) != 2 * length:
            raise RccError(f"{self.path}: truncated name table")
        return raw.decode("utf-16-be")

    def node(self, index: int) -> tuple[str, int, int, int]:
        """(name, flags, a, b): a, b = child count, first child for directories; 0, data offset for files."""
        off = self.tree + index * self.node_size
        name_off, flags = self._u(">IH", off)
        if flags & _DIR:
            count, first = self._u(">II", off + 6)
            return "" if index == 0 else self.name(name_off), flags, count, first
        _territory, _language, data_off = self._u(">HHI", off + 6)
        return self.name(name_off), flags, 0, data_off

    def payload_at(self, offset: int, flags: int, member: str) -> bytes:
        (length,) = self._u(">I", self.payload + offset)
        start = self.payload + offset + 4
        blob = self.data[start : start + length]
        if len(blob) != length:
            raise RccError(f"{self.path}: member {member} is truncated")
        if flags & _ZSTD:
            raise RccError(f"{self.path}: member {member} is zstd-compressed, which this reader does not support")
        if flags & _ZLIB:
            try:
                return zlib.decompress(blob[4:])
            except zlib.error as exc:
                raise RccError(f"{self.path}: member {member} has corrupt zlib data") from exc
        return blob


def members(path: str | Path, suffixes: tuple[str, ...] | None = None) -> Iterator[tuple[str, bytes]]:
    """Yield `(member path, content)` for every file in the bundle, depth-first in tree order.

    `suffixes` (lower-case, e.g. `(".ogg", ".wav")`) restricts to matching names, which avoids
    decompressing images when only sounds are wanted.
    """
    rcc = _Rcc(Path(path))
    stack: list[tuple[int, str]] = [(0, "")]
    seen = 0
    while stack:
        index, prefix = stack.pop()
        seen += 1
        if seen > 1_000_000:
            raise RccError(f"{rcc.path}: resource tree does not terminate (corrupt bundle)")
        name, flags, count, first = rcc.node(index)
        full = f"{prefix}/{name}" if name else prefix
        if flags & _DIR:
            # push in reverse so children come out in stored (sorted-by-hash) order
            for child in range(first + count - 1, first - 1, -1):
                stack.append((child, full))
            continue
        if suffixes and not full.lower().endswith(suffixes):
            continue
        yield full.lstrip("/"), rcc.payload_at(first, flags, full)


def member_names(path: str | Path) -> list[str]:
    """Every file path stored in the bundle (no payloads decompressed)."""
    rcc = _Rcc(Path(path))
    out, stack = [], [(0, "")]
    while stack:
        index, prefix = stack.pop()
        name, flags, count, first = rcc.node(index)
        full = f"{prefix}/{name}" if name else prefix
        if flags & _DIR:
            stack.extend((c, full) for c in range(first + count - 1, first - 1, -1))
        else:
            out.append(full.lstrip("/"))
    return out
