"""Catalogue of real recordings in Debian `main` packages: which file is which sound, from which original.

Everything the environmental-sound builders use is listed here by hand, after reading each
package's credits (OpenSFX's per-sample catalogue names, gcompris' and sonic-pi's DEP-5
`copyright`, minetest's mod READMEs). The catalogue records, for every file, the *original*
recording it was edited from. That matters for honesty: minetest's `fire_large.ogg` and
`fire_fire.*.ogg` are cut from one freesound recording, and two OpenSFX train sounds share one
horn recording. Files sharing an original form one ESC-50 "source" (`src_file`) and so always land
in the same fold, and the pretraining corpus excludes every original that any ESC-50 source uses.

Containers are read without installing anything: OpenSFX keeps its WAVs in one OpenTTD `.cat`
catalogue (see `read_cat`), gcompris keeps its sounds in Qt `.rcc` bundles (see `tasks.data.rcc`).
Members are unpacked once into the source cache so the manifest can pin each file by sha256.

Why these classes: they are the ESC-50 categories for which the packages hold at least three
distinct original recordings (15 classes). Categories with fewer (helicopter, clapping, cat,
thunderstorm, ...) are left out rather than padded with near-duplicates.
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from upstreams.fileio import atomic_write_bytes

from . import rcc
from .debian import DebianSources


def _signal():
    """scipy.signal, imported on first use (it costs seconds; checking a manifest needs none of it)."""
    import scipy.signal

    return scipy.signal

__all__ = [
    "ESC50_TARGETS",
    "ESC10",
    "Sound",
    "SourceRecording",
    "ESC_SOURCES",
    "ESC_BACKGROUNDS",
    "PRETRAIN_NOISE",
    "PACKAGES",
    "SoundLibrary",
    "read_cat",
    "decode",
]

# The real ESC-50 category -> target id table (meta/esc50.csv of the original release).
ESC50_TARGETS: dict[str, int] = {
    name: i
    for i, name in enumerate(
        "dog rooster pig cow frog cat hen insects sheep crow "
        "rain sea_waves crackling_fire crickets chirping_birds water_drops wind pouring_water toilet_flush thunderstorm "
        "crying_baby sneezing clapping breathing coughing footsteps laughing brushing_teeth snoring drinking_sipping "
        "door_wood_knock mouse_click keyboard_typing door_wood_creaks can_opening washing_machine vacuum_cleaner "
        "clock_alarm clock_tick glass_breaking "
        "helicopter chainsaw siren car_horn engine train church_bells airplane fireworks hand_saw".split()
    )
}
# ESC-10 is the 10-class subset flagged `esc10=True` in the real metadata.
ESC10 = frozenset(
    ["dog", "rooster", "rain", "sea_waves", "crackling_fire", "crying_baby", "sneezing", "clock_tick", "helicopter", "chainsaw"]
)

OPENTTD = "openttd-opensfx"
GCOMPRIS = "gcompris-qt-data"
MINETEST = "minetest-data"
SONICPI = "sonic-pi-samples"
MOH = "asterisk-moh-opsound-wav"
TUXPAINT = "tuxpaint-stamps-default"
PACKAGES = (OPENTTD, GCOMPRIS, MINETEST, SONICPI, MOH, TUXPAINT)

_CAT = "usr/share/games/openttd/baseset/opensfx/opensfx.cat"
_RCC = "usr/share/gcompris-qt/rcc"
_MT = "usr/share/games/minetest/games/minetest_game/mods"
_SPI = "usr/share/sonic-pi/samples"
_TUX = "usr/share/tuxpaint/stamps"
_MOH = "usr/share/asterisk/moh"


@dataclass(frozen=True)
class Sound:
    """One audio file inside a Debian package.

    `member` is a path inside the extracted package, optionally followed by `#N` (entry N of an
    OpenTTD `.cat`, whose stored name must contain `expect`) or `!inner/path` (a Qt `.rcc` member).
    `original` names the recording it was edited from; equal originals mean "same recording".
    `licence`/`credit` are filled from package metadata when left empty.
    """

    package: str
    member: str
    original: str
    licence: str = ""
    credit: str = ""
    expect: str = ""


@dataclass(frozen=True)
class SourceRecording:
    """An ESC-50 source (`src_file`): one original recording, possibly cut into several files."""

    category: str
    key: str
    sounds: tuple[Sound, ...]


def _ottd(index: int, expect: str, original: str) -> Sound:
    return Sound(OPENTTD, f"{_CAT}#{index}", original, expect=expect)


def _gc(bundle: str, inner: str, original: str = "") -> Sound:
    return Sound(GCOMPRIS, f"{_RCC}/{bundle}.rcc!gcompris/src/activities/{inner}", original or f"gcompris:{inner}")


def _mt(path: str, original: str, licence: str, credit: str) -> Sound:
    return Sound(MINETEST, f"{_MT}/{path}", original, licence, credit)


def _tux(path: str, original: str = "") -> Sound:
    return Sound(TUXPAINT, f"{_TUX}/{path}", original or f"tuxpaint:{path}")


def _spi(name: str) -> Sound:
    return Sound(SONICPI, f"{_SPI}/{name}", f"sonic-pi:{name}")


def _src(category: str, key: str, *sounds: Sound) -> SourceRecording:
    return SourceRecording(category, key, tuple(sounds))


_MITO = ("CC-BY-SA-3.0", "Mito551 (minetest_game default mod)")
# fmt: off
ESC_SOURCES: dict[str, list[SourceRecording]] = {
    "dog": [
        _src("dog", "gc-farm-dog", _gc("explore_farm_animals", "explore_farm_animals/resource/animals/dog.ogg")),
        _src("dog", "gc-bark-1", _gc("memory-sound", "memory-sound/resource/LRBark_1_LA_cut.ogg")),
        _src("dog", "gc-bark-3", _gc("memory-sound", "memory-sound/resource/LRBark_3_LA_cut.ogg")),
        _src("dog", "tux-dog", _tux("animals/mammals/dogs/dog.ogg")),
    ],
    "pig": [
        _src("pig", "gc-farm-pig", _gc("explore_farm_animals", "explore_farm_animals/resource/animals/pig.ogg")),
        _src("pig", "tux-pig", _tux("animals/mammals/pig.ogg")),
        _src("pig", "tux-pig-golden", *[_tux(f"animals/mammals/{n}.ogg", "tuxpaint:pig_golden") for n in ("pig_golden", "pig_golden2")]),
    ],
    "cow": [
        _src("cow", "ottd-cow", _ottd(37, "Cow", "freesound:JarredGibb/233146")),
        _src("cow", "gc-farm-cow", _gc("explore_farm_animals", "explore_farm_animals/resource/animals/cow.ogg")),
        _src("cow", "tux-cow", _tux("animals/mammals/bovines/cow.ogg")),
        _src("cow", "tux-cow-white", _tux("animals/mammals/bovines/cow_white.ogg")),
    ],
    "insects": [
        _src("insects", "tux-bee", _tux("animals/insects/bee.ogg")),
        _src("insects", "tux-hornet", _tux("animals/insects/hornet.ogg")),
        _src("insects", "tux-mosquito", _tux("animals/insects/mosquito.ogg")),
    ],
    "sheep": [
        _src("sheep", "ottd-sheep", _ottd(36, "Sheep", "pdsounds:earthcalling/sheep-field")),
        _src("sheep", "gc-farm-sheep", _gc("explore_farm_animals", "explore_farm_animals/resource/animals/sheep.ogg")),
        _src("sheep", "tux-sheep", _tux("animals/mammals/bovines/sheep.ogg")),
        _src("sheep", "tux-lamb", _tux("animals/mammals/bovines/sheep_lamb.ogg")),
    ],
    "crackling_fire": [
        _src("crackling_fire", "mt-fire-dynamicell",
             *[_mt(f"fire/sounds/fire_fire.{i}.ogg", "freesound:Dynamicell/17548", "CC-BY-3.0", "Dynamicell (freesound 17548)") for i in (1, 2, 3)],
             _mt("fire/sounds/fire_large.ogg", "freesound:Dynamicell/17548", "CC-BY-3.0", "Dynamicell (freesound 17548)")),
        _src("crackling_fire", "mt-fire-dobroide",
             _mt("fire/sounds/fire_small.ogg", "freesound:dobroide/4211", "CC-BY-3.0", "dobroide (freesound 4211)")),
        _src("crackling_fire", "mt-furnace-iankath",
             _mt("default/sounds/default_furnace_active.ogg", "freesound:iankath/173991", "CC0-1.0", "iankath (freesound 173991)")),
    ],
    "chirping_birds": [
        _src("chirping_birds", "ottd-bird-1", _ottd(66, "Bird (1)", "freesound:SpaceJoe/507257")),
        _src("chirping_birds", "ottd-bird-12", _ottd(72, "Bird (2)", "freesound:SpaceJoe/507254")),
        _src("chirping_birds", "tux-blackbird", _tux("animals/birds/blackbird.ogg")),
        _src("chirping_birds", "tux-lark", _tux("animals/birds/lark.ogg")),
    ],
    "pouring_water": [
        _src("pouring_water", "mt-water-yuval",
             *[_mt(f"env_sounds/sounds/env_sounds_water.{i}.ogg", "freesound:Yuval/197023", "CC0-1.0", "Yuval (freesound 197023)") for i in (1, 2, 3, 4)]),
        _src("pouring_water", "gc-water-fill", _gc("canal_lock", "canal_lock/resource/water_fill.wav", "freesound:inchadney/34681")),
        _src("pouring_water", "gc-core-water", Sound(GCOMPRIS, f"{_RCC}/core.rcc!gcompris/src/core/resource/sounds/water.wav", "gcompris:core/water")),
    ],
    "footsteps": [
        _src("footsteps", "mt-grass", *[_mt(f"default/sounds/default_grass_footstep.{i}.ogg", "minetest:Mito551/grass", *_MITO) for i in (1, 2, 3)]),
        _src("footsteps", "mt-gravel", *[_mt(f"default/sounds/default_gravel_footstep.{i}.ogg", "minetest:Mito551/gravel", *_MITO) for i in (1, 2, 3, 4)]),
        _src("footsteps", "mt-hard", *[_mt(f"default/sounds/default_hard_footstep.{i}.ogg", "freesound:Erdie/41579", "CC-BY-3.0", "Erdie (freesound 41579)") for i in (1, 2, 3)]),
        _src("footsteps", "mt-sand", *[_mt(f"default/sounds/default_sand_footstep.{i}.ogg", "freesound:worthahep88/319224", "CC0-1.0", "worthahep88 (freesound 319224)") for i in (1, 2, 3)]),
        _src("footsteps", "mt-snow", *[_mt(f"default/sounds/default_snow_footstep.{i}.ogg", "freesound:Ryding/94337", "CC0-1.0", "Ryding (freesound 94337)") for i in (1, 2, 3, 4, 5)]),
        _src("footsteps", "mt-water", *[_mt(f"default/sounds/default_water_footstep.{i}.ogg", "freesound:AGFX/pack1253", "CC-BY-3.0", "AGFX (freesound pack 1253)") for i in (1, 2, 3)]),
        _src("footsteps", "gc-icy-walk", _gc("reversecount", "reversecount/resource/icy_walk.wav", "freesound:Corsica_S/28662")),
    ],
    "door_wood_creaks": [
        _src("door_wood_creaks", "mt-door-open", _mt("doors/sounds/doors_door_open.ogg", "minetest:CGEffex/door_open", "CC-BY-3.0", "CGEffex, modified by BlockMen")),
        _src("door_wood_creaks", "mt-door-close", _mt("doors/sounds/doors_door_close.ogg", "minetest:bennstir/door_close", "CC-BY-3.0", "bennstir")),
        _src("door_wood_creaks", "mt-fencegate-open", _mt("doors/sounds/doors_fencegate_open.ogg", "freesound:mhtaylor67/126041", "CC0-1.0", "mhtaylor67 (freesound 126041)")),
        _src("door_wood_creaks", "gc-door-open-2", _gc("memory-sound", "memory-sound/resource/LRDoor_Open_2_LA.ogg")),
        _src("door_wood_creaks", "spi-perc-door", _spi("perc_door.flac")),
    ],
    "glass_breaking": [
        _src("glass_breaking", "mt-glass-1", _mt("default/sounds/default_break_glass.1.ogg", "freesound:cmusounddesign/71947", "CC-BY-3.0", "cmusounddesign (freesound 71947)")),
        _src("glass_breaking", "mt-glass-2", _mt("default/sounds/default_break_glass.2.ogg", "freesound:Tomlija/97669", "CC-BY-3.0", "Tomlija (freesound 97669)")),
        _src("glass_breaking", "mt-glass-3", _mt("default/sounds/default_break_glass.3.ogg", "freesound:lsprice/88808", "CC-BY-3.0", "lsprice (freesound 88808)")),
    ],
    "engine": [
        _src("engine", "ottd-truck", _ottd(25, "Truck/old bus start, pull away", "freesound:saphix/36794")),
        _src("engine", "ottd-modern-bus", _ottd(27, "Modern bus start", "freesound:icmusic/36897")),
        _src("engine", "ottd-old-bus", _ottd(28, "Old bus start", "freesound:roscoetoon/26814")),
        _src("engine", "gc-car-engine", _gc("memory-sound", "memory-sound/resource/LRStartAndStopCarEngine1LACut.ogg")),
    ],
    "train": [
        _src("train", "ottd-steam", _ottd(4, "Steam train station departure", "freesound:eliasheuninck/170464"),
             _ottd(5, "Steam engine going in tunnel", "freesound:eliasheuninck/170464")),
        _src("train", "ottd-diesel", _ottd(10, "Diesel/electric train", "freesound:patchen/17851")),
        _src("train", "ottd-maglev", _ottd(65, "Maglev train", "freesound:Marec/17601")),
        _src("train", "ottd-monorail", _ottd(71, "Monorail train", "freesound:Metzik/387878")),
        _src("train", "gc-railroad", Sound(GCOMPRIS, f"{_RCC}/railroad.rcc!gcompris/src/activities/railroad/resource/sounds/train.wav", "gcompris:railroad/train")),
        _src("train", "gc-train-slowing", _gc("memory-sound", "memory-sound/resource/LRTrain_slowing_down_01_LA_cut.ogg")),
    ],
    "airplane": [
        _src("airplane", "ottd-cessna", _ottd(8, "Propeller plane start", "freesound:Cheeseheadburger/141519")),
        _src("airplane", "ottd-passenger-jet", _ottd(9, "Early jet take off", "freesound:digifishmusic/54965")),
        _src("airplane", "ottd-landing-jet", _ottd(59, "Mach 1+ Jet take off", "freesound:bigpickle51/219469")),
        _src("airplane", "ottd-navy-jets", _ottd(61, "Modern jet take off", "freesound:ibisradio/328446")),
        _src("airplane", "ottd-propeller", _ottd(69, "Propeller plane take off", "freesound:MrVasLuk/333203")),
    ],
    "fireworks": [
        _src("fireworks", "tux-fireworks", _tux("seasonal/newyears/fireworks.ogg")),
        _src("fireworks", "ottd-explosion", _ottd(18, "Explosion", "opensfx:JanisLukss/explosion")),
        _src("fireworks", "mt-tnt-explode", _mt("tnt/sounds/tnt_explode.ogg", "freesound:steveygos93/80401", "CC0-1.0", "steveygos93 (freesound 80401), edited by TumeniNodes")),
    ],
}
# fmt: on

# How a 5 s clip is composed from a source: short events are repeated (a dog barks several times,
# footsteps come in trains), long recordings are cropped. (min, max) occurrences per clip.
EVENT_REPEATS: dict[str, tuple[int, int]] = {
    "dog": (1, 4), "pig": (1, 3), "cow": (1, 2), "sheep": (1, 3), "insects": (1, 2),
    "chirping_birds": (1, 3), "crackling_fire": (1, 2), "pouring_water": (1, 2), "footsteps": (3, 8),
    "door_wood_creaks": (1, 2), "glass_breaking": (1, 1), "engine": (1, 1), "train": (1, 1),
    "airplane": (1, 1), "fireworks": (1, 4),
}  # fmt: skip

# Background beds mixed into ESC-50 clips. Disjoint from PRETRAIN_NOISE so that pretraining never
# sees audio that is part of an evaluation clip.
ESC_BACKGROUNDS: tuple[Sound, ...] = (
    _spi("vinyl_hiss.flac"),
    _spi("ambi_glass_hum.flac"),
    _spi("ambi_soft_buzz.flac"),
)
# Noise for M2D-X's noise mixing and the general pretraining corpus: never used by any benchmark set.
PRETRAIN_NOISE: tuple[Sound, ...] = tuple(
    Sound(MOH, f"{_MOH}/{name}.wav", f"asterisk-moh:{name}", "CC-BY-SA-3.0", credit)
    for name, credit in (
        ("macroform-cold_day", "Paul Shuler (Macroform)"),
        ("macroform-robot_dity", "Paul Shuler (Macroform)"),
        ("macroform-the_simplicity", "Paul Shuler (Macroform)"),
        ("manolo_camp-morning_coffee", "Manolo Camp"),
        ("reno_project-system", "Reno Project"),
    )
) + (
    _mt("env_sounds/sounds/env_sounds_lava.1.ogg", "freesound:Halion/17785", "CC0-1.0", "Halion (freesound 17785)"),
    _spi("ambi_sauna.flac"),
    _spi("ambi_haunted_hum.flac"),
    _spi("ambi_drone.flac"),
    _spi("loop_3d_printer.flac"),
)


# -- container formats ------------------------------------------------------------------------


def read_cat(path: str | Path) -> list[tuple[str, bytes]]:
    """Entries `(name, wav bytes)` of an OpenTTD sound catalogue (`.cat`, as written by catcodec).

    Layout (little-endian): a table of `(u32 offset, u32 size)` pairs whose first offset, with
    the top bit masked, also gives the table length; each entry is `u8 name length`, the
    NUL-terminated name (OpenSFX stores title, credits and licence there), then a RIFF WAVE of
    `size` bytes.
    """
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path}: not an OpenTTD sound catalogue (too short)")
    (first,) = struct.unpack_from("<I", data, 0)
    count = (first & 0x7FFFFFFF) // 8
    out = []
    for i in range(count):
        off, size = struct.unpack_from("<II", data, 8 * i)
        off &= 0x7FFFFFFF
        length = data[off]
        name = data[off + 1 : off + 1 + length].rstrip(b"\0").decode("utf-8", "replace")
        wav = data[off + 1 + length : off + 1 + length + size]
        if len(wav) != size or wav[:4] != b"RIFF":
            raise ValueError(f"{path}: entry {i} is truncated or not a WAV")
        out.append((name, wav))
    return out


def _opensfx_licence(name: str) -> tuple[str, str]:
    m = re.search(r"License:\s*(.+?)\.(?:\s|$)", name)
    licence = m.group(1).strip() if m else "CC-BY-SA-3.0 (OpenSFX)"
    credit = name[: m.start()].strip() if m else name
    return licence, credit


# -- Debian copyright (DEP-5) -----------------------------------------------------------------


def _dep5(path: Path) -> list[dict[str, str]]:
    raw = path.read_bytes()
    text = gzip.decompress(raw).decode() if raw[:2] == b"\x1f\x8b" else raw.decode("utf-8", "replace")
    stanzas, cur, key = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                stanzas.append(cur)
            cur, key = {}, None
        elif line[0] in " \t" and key:
            cur[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            cur[key] = value.strip()
    if cur:
        stanzas.append(cur)
    return [s for s in stanzas if "Files" in s]


def _dep5_lookup(stanzas: list[dict[str, str]], source_path: str) -> tuple[str, str]:
    """(licence, credit) of the last stanza whose `Files` globs match (DEP-5: last match wins)."""
    hit = None
    for s in stanzas:
        if any(fnmatch.fnmatchcase(source_path, pat) for pat in s["Files"].split()):
            hit = s
    if hit is None:
        return "", ""
    credit = " / ".join(x.strip() for x in hit.get("Copyright", "").splitlines() if x.strip())
    extra = hit.get("Comment", "") or hit.get("Source", "")
    if extra:
        credit += f" ({extra.splitlines()[0].strip()})"
    return hit.get("License", "").splitlines()[0].strip(), credit


# -- decoding ---------------------------------------------------------------------------------


def decode(path: str | Path, sr: int) -> np.ndarray:
    """Mono float32 waveform of `path` at `sr` (polyphase resampling: deterministic, no torch)."""
    data, orig = sf.read(str(path), dtype="float32", always_2d=True)
    x = data.mean(axis=1)
    if orig != sr:
        g = np.gcd(int(orig), int(sr))
        x = _signal().resample_poly(x, sr // g, orig // g).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


class SoundLibrary:
    """Resolves catalogue `Sound`s to files on disk and records their provenance in the manifest."""

    def __init__(self, sources: DebianSources):
        self.sources = sources
        self._roots: dict[str, Path] = {}
        self._dep5: dict[str, list[dict[str, str]]] = {}
        self._cats: dict[Path, list[tuple[str, bytes]]] = {}
        self.credits: dict[Path, tuple[str, str]] = {}  # file -> (licence, credit) of every file used

    def root(self, package: str) -> Path:
        if package not in self._roots:
            self._roots[package] = self.sources.extract(package)
        return self._roots[package]

    def _licence(self, sound: Sound, cat_name: str | None) -> tuple[str, str]:
        if sound.licence:
            return sound.licence, sound.credit
        if cat_name is not None:
            return _opensfx_licence(cat_name)
        if sound.package not in self._dep5:
            copyright_file = self.root(sound.package) / "usr/share/doc" / sound.package / "copyright"
            self._dep5[sound.package] = _dep5(copyright_file) if copyright_file.exists() else []
        member = sound.member
        if "!" in member:  # gcompris: rcc member "gcompris/src/..." -> source path "src/..."
            source_path = member.split("!", 1)[1].split("/", 1)[1]
        elif sound.package == SONICPI:
            source_path = "etc/samples/" + Path(member).name
        else:
            source_path = member
        licence, credit = _dep5_lookup(self._dep5[sound.package], source_path)
        return licence or "see package copyright", credit or sound.package

    def path(self, sound: Sound) -> Path:
        """A real file holding `sound` (container members are unpacked once into the cache)."""
        root = self.root(sound.package)
        cat_name = None
        if "#" in sound.member:
            container, index = sound.member.rsplit("#", 1)
            cpath = root / container
            if cpath not in self._cats:
                self._cats[cpath] = read_cat(cpath)
            cat_name, blob = self._cats[cpath][int(index)]
            if sound.expect and sound.expect not in cat_name:
                raise ValueError(
                    f"{cpath} entry {index} is '{cat_name[:60]}', expected '{sound.expect}': the package "
                    f"version changed; update tasks/data/sound_sources.py"
                )
            dest = root / "_members" / Path(container).name / f"{int(index):03d}.wav"
        elif "!" in sound.member:
            container, inner = sound.member.split("!", 1)
            dest = root / "_members" / Path(container).name / inner
            blob = None
            if not dest.exists():
                # unpack every sound of the bundle at once: decompressing it once per member is slow
                for name, data in rcc.members(root / container, (".ogg", ".wav", ".flac")):
                    target = root / "_members" / Path(container).name / name
                    if not target.exists():
                        atomic_write_bytes(target, data)
                if not dest.exists():
                    raise FileNotFoundError(f"{root / container} has no member {inner}")
        else:
            dest = root / sound.member
            blob = None
            if not dest.exists():
                raise FileNotFoundError(f"{dest}: not in package {sound.package} (catalogue out of date?)")
        if blob is not None and not dest.exists():
            atomic_write_bytes(dest, blob)
        licence, credit = self._licence(sound, cat_name)
        self.sources.use(sound.package, dest, licence, credit)
        self.credits[dest] = (licence, credit)
        return dest

    def load(self, sound: Sound, sr: int) -> np.ndarray:
        return decode(self.path(sound), sr)


def esc_originals() -> set[str]:
    """Every original recording any ESC-50 source or background uses (pretraining must avoid them)."""
    out = {s.original for srcs in ESC_SOURCES.values() for src in srcs for s in src.sounds}
    return out | {s.original for s in ESC_BACKGROUNDS}


def audio_bytes_info(blob: bytes) -> tuple[float, int]:
    """(duration s, sample rate) of an in-memory audio file."""
    info = sf.info(io.BytesIO(blob))
    return info.duration, info.samplerate
