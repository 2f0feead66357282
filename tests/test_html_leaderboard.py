"""`bench leaderboard --html DIR`: one self-contained page, checked as data and in a real headless browser.

The browser test drives Debian's `chromium` through `chromium-driver` (both installed by
scripts/setup.sh); it is skipped, saying so, only where chromium is not installed.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from bench.cli import main as bench_main
from bench.results.html_report import strict_json, write_html
from bench.results.leaderboard import leaderboard
from bench.results.records import ResultRecord, RunTimer, read_records, write_record

NASTY = "</script><img src=x onerror=alert(1)> & \u2028"
CKPT_SHA = "c0ffee" * 10 + "beef"
GRID = [{"lr": 1e-3, "val_mean": 40.0, "val_per_fold": [39.0, 41.0]},
        {"lr": 1e-2, "val_mean": 47.5, "val_per_fold": [46.0, 49.0]},
        {"lr": 1e-1, "val_mean": float("nan"), "val_per_fold": [None, None]}]


def _record(upstream, score, task="esc50", protocol="linear", units=None, **kw) -> ResultRecord:
    sec = {"std": 2.5, "folds": 2}
    if units:
        sec["units"] = [{"seed": s, "fold": f, "score": v} for s, f, v in units]
    rec = ResultRecord(
        upstream=upstream, task=task, protocol=protocol, metric=kw.pop("metric", "accuracy"), score=score,
        secondary=sec, split="test folds", lr=1e-2, seeds=sorted({u[0] for u in units}) if units else [0],
        selection={"on": "validation", "criterion": "mean validation accuracy over folds", "grid": GRID,
                   "chosen": {"lr": 1e-2}, "test_used_for_selection": False},
        dataset={"name": task, "path": f".cache/tiny/{task}", "profile": "tiny", "manifest_sha256": "ab" * 32},
        checkpoint_sha256=CKPT_SHA if upstream == "m2d" else None, **kw)
    rec = RunTimer().finish(rec)
    rec.wall_time_s = 12.5
    return rec


def _units(base: float, jitter: float = 0.0) -> list[tuple[int, str, float]]:
    """3 seeds x 2 folds with mean `base` + 1."""
    return [(s, f, base + 0.5 * s + (1.0 if f == "fold2" else 0.0) + jitter * (i - 2.5))
            for i, (s, f) in enumerate((s, f) for s in (0, 1, 2) for f in ("fold1", "fold2"))]


@pytest.fixture()
def results(tmp_path) -> Path:
    """esc50/linear: m2d (3 seeds x 2 folds, mean 61), fbank 10.2 (one unit), random (3 x 2, mean 9.5) - so
    sorting by score as text ("10.2" < "61" < "9.5") and as numbers give different orders; esc50/weighted
    with layer weights and a record field holding HTML."""
    res = tmp_path / "results"
    m2d, rnd = _units(60.0, jitter=0.2), _units(8.5)
    write_record(_record("m2d", sum(u[2] for u in m2d) / 6, units=m2d), res)
    write_record(_record("random", sum(u[2] for u in rnd) / 6, units=rnd), res)
    write_record(_record("fbank", 10.2), res)
    write_record(_record("m2d", 55.0, protocol="weighted",
                         details={"layer_weights": [0.5, 0.3, 0.2], "per_fold": [{"fold": "fold1", "test": 55.0}]},
                         command=NASTY), res)
    return res


def _page_data(page: Path) -> dict:
    text = page.read_text()
    m = re.search(r'<script type="application/json" id="lb-data">(.*?)</script>', text, re.S)
    assert m, "no embedded data"

    def no_constants(name):
        raise AssertionError(f"non-strict JSON constant {name}")

    return json.loads(m.group(1), parse_constant=no_constants)


def test_page_is_self_contained_strict_and_escaped(results, tmp_path):
    out = tmp_path / "site"
    assert bench_main(["leaderboard", "--results", str(results), "--html", str(out)]) == 0
    page = out / "index.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # nothing fetched: no CDN, no external file
    assert not re.search(r"<(script|img|iframe)[^>]*\ssrc=|<link[^>]*stylesheet", text)
    assert "<img" not in text and text.count("</script>") == 2  # the record's HTML cannot close an element
    data = _page_data(page)
    groups = {(g["task"], g["protocol"]): g for g in data["groups"]}
    lin = groups[("esc50", "linear")]
    assert [r["upstream"] for r in lin["rows"]] == ["m2d", "fbank", "random"]
    m2d = lin["rows"][0]
    assert m2d["n_seeds"] == 3 and len(m2d["units"]) == 6 and "[" in m2d["score_text"]
    rec = data["records"][m2d["records"][0]["key"]]
    assert rec["selection"]["grid"][2]["val_mean"] is None  # NaN -> null
    assert rec["checkpoint_sha256"] == CKPT_SHA
    weighted = data["records"][groups[("esc50", "weighted")]["rows"][0]["records"][0]["key"]]
    assert weighted["command"] == NASTY
    assert [c["a"] + ">" + c["b"] for c in data["claims"]] == ["m2d>random"]
    assert data["claims"][0]["n"] == 6 and data["claims"][0]["verdict"] == "holds"
    assert strict_json({"x": float("inf"), "s": "</b>"}) == '{"x":null,"s":"\\u003c/b\\u003e"}'


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    if not chromium or not driver:
        pytest.skip("chromium / chromium-driver not installed (scripts/setup.sh installs them: "
                    "apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    drv.set_page_load_timeout(20)
    drv.set_script_timeout(10)
    return drv


def _column(table, name: str) -> list[str]:
    from selenium.webdriver.common.by import By

    heads = [th.text.strip() for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    i = next(k for k, h in enumerate(heads) if h.startswith(name))
    return [tr.find_elements(By.TAG_NAME, "td")[i].text.split()[0]
            for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr.row")]


def _header(table, name: str):
    from selenium.webdriver.common.by import By

    return next(th for th in table.find_elements(By.CSS_SELECTOR, "thead th") if th.text.strip().startswith(name))


def test_page_in_headless_chromium(results, tmp_path):
    from PIL import Image

    page = write_html(leaderboard(results), read_records(results), tmp_path / "site", title="html test")
    drv = _browser()
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        drv.get(page.resolve().as_uri())
        WebDriverWait(drv, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.lb tbody tr.row"))
        table = drv.find_element(By.CSS_SELECTOR, 'table.lb[data-task="esc50"][data-protocol="linear"]')

        # sorting: a header click re-sorts, numbers as numbers, a second click reverses
        assert _column(table, "upstream") == ["m2d", "fbank", "random"]  # rank order: best first
        _header(table, "upstream").click()
        assert _column(table, "upstream") == ["fbank", "m2d", "random"]
        _header(table, "upstream").click()
        assert _column(table, "upstream") == ["random", "m2d", "fbank"]
        _header(table, "score").click()
        assert _column(table, "upstream") == ["random", "fbank", "m2d"]  # 9.5 < 10.2 < 61 (not as text)
        assert _header(table, "score").get_attribute("aria-sort") == "ascending"
        _header(table, "score").click()
        assert _column(table, "upstream") == ["m2d", "fbank", "random"]

        # drill-down: the row opens its record, with the lr grid and the chosen point
        row = table.find_element(By.CSS_SELECTOR, 'tbody tr.row[data-upstream="m2d"]')
        detail = row.find_element(By.XPATH, "following-sibling::tr[1]")
        assert not detail.is_displayed()
        row.click()
        WebDriverWait(drv, 5).until(lambda d: detail.is_displayed())
        grid = detail.find_element(By.CSS_SELECTOR, "table.grid")
        assert [th.text for th in grid.find_elements(By.CSS_SELECTOR, "thead th")][:2] == ["lr", "val_mean"]
        chosen = grid.find_elements(By.CSS_SELECTOR, "tr.chosen")
        assert len(chosen) == 1 and chosen[0].text.startswith("0.01") and "chosen" in chosen[0].text
        assert CKPT_SHA in detail.text and "ab" * 32 in detail.text  # checkpoint and manifest sha256
        assert len(detail.find_elements(By.CSS_SELECTOR, "table.units tbody tr")) == 3  # 3 seeds x 2 folds
        assert "12.5 s" in detail.text  # wall time
        row.click()
        assert not detail.is_displayed()

        # layer weights, and a record's HTML shown as text, never parsed
        wrow = drv.find_element(By.CSS_SELECTOR, 'table.lb[data-protocol="weighted"] tbody tr.row')
        wrow.click()
        wdet = wrow.find_element(By.XPATH, "following-sibling::tr[1]")
        assert len(wdet.find_elements(By.CSS_SELECTOR, ".layer-weights .bar")) == 3
        assert "</script><img src=x" in wdet.text and not drv.find_elements(By.TAG_NAME, "img")

        # claims table: one paired test, rendered with its verdict
        claims = drv.find_element(By.CSS_SELECTOR, "table.claims")
        assert "holds" in claims.text and "m2d" in claims.text

        errors = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]
        assert not errors, errors

        shot = tmp_path / "page.png"
        assert drv.save_screenshot(str(shot))
        img = Image.open(shot).convert("RGB")
        colours = img.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 16, "blank screenshot"
    finally:
        drv.quit()
