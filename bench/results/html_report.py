"""The leaderboard as one self-contained static HTML page (`bench leaderboard --html DIR`, `index.html` of
`bench reproduce` and `bench quickstart`).

The page needs no network and no server: CSS and JavaScript are inline, and the data - the
leaderboard rows, the claims and the result records behind every row - is embedded as strict JSON
(NaN and infinities become null) in a `<script type="application/json">` element, with `<`, `>`, `&`
and the JavaScript line separators written as `\\u` escapes so no record text can close the element.
A little vanilla JavaScript renders it with `textContent` only (never `innerHTML` on data): per task
and protocol one table, sortable by any column (click a header: numbers compare as numbers, a
second click reverses), the score with its 95 % interval where seeds or folds give one, the papers'
claims (`bench.results.report.claims_table`), and a drill-down per row (click it, or Enter/Space on it)
to its record(s): the validation grid with the chosen point marked, the layer weights, the
seed x fold units, checkpoint and manifest sha256, commit, wall time, and the raw record.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path, PurePath
from typing import Any, Iterable

import pandas as pd

from upstreams.fileio import atomic_write_text

from .plots import fmt_score

__all__ = ["write_html", "render_html", "page_data", "strict_json"]

_ROW_FIELDS = [
    "upstream", "task", "protocol", "metric", "score", "n_seeds", "score_std", "ci95_low", "ci95_high", "ci_method",
    "std", "higher_is_better", "split", "dataset", "profile", "manifest_sha256", "checkpoint_sha256",
    "upstream_options", "lr", "seed", "seeds", "folds", "selected_on", "wall_time_s", "peak_memory_mb", "git_commit",
    "created", "record",
]


def _plain(obj: Any) -> Any:
    """`obj` as strict-JSON-able Python: NaN/inf -> None, numpy scalars -> Python, dataclasses (Unit, Paired) ->
    dicts, tuples/sets -> lists, anything else unknown -> str."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_plain(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return _plain(obj.to_dict())
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _plain(getattr(obj, k)) for k in obj.__dataclass_fields__}
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        try:
            return _plain(obj.item())
        except (TypeError, ValueError):
            pass
    if obj is pd.NA or obj is pd.NaT:
        return None
    return str(obj)


def strict_json(obj: Any) -> str:
    """Strict JSON (no NaN/Infinity) that is safe inside a `<script>` element of an HTML page."""
    text = json.dumps(_plain(obj), allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _record_key(path: str) -> str:
    """Records are matched by `<task>/<file name>` (the names are unique), so a row's record path may be
    relative to any root (the reproduction's out dir, the working directory) or absolute."""
    parts = PurePath(str(path)).parts
    return "/".join(parts[-2:])


def _score_text(metric: str, score, lo, hi, std) -> str:
    score, lo, hi, std = _num(score), _num(lo), _num(hi), _num(std)
    if score is None:
        return "—"
    text = fmt_score(metric, score)
    if lo is not None and hi is not None:
        return f"{text} [{fmt_score(metric, lo)}, {fmt_score(metric, hi)}]"
    return text


def _fmt_p(p) -> str:
    p = _num(p)
    return "—" if p is None else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def _claims(df: pd.DataFrame) -> list[dict]:
    from .report import claims_table

    try:
        claims = claims_table(df)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:  # e.g. rows without units
        return [{"error": f"claims could not be computed: {exc}"}]
    out = []
    for c in claims:
        t = c.test
        diff, lo, hi = (_num(getattr(t, k, None)) for k in ("diff", "ci95_low", "ci95_high"))
        diff_text = "—" if diff is None else (f"{diff:+.3g} [{lo:+.3g}, {hi:+.3g}]" if lo is not None and hi is not None
                                               else f"{diff:+.3g}")
        out.append({
            "claim": c.claim, "task": c.task, "protocol": c.protocol, "paper": c.paper, "metric": c.metric,
            "a": c.a, "b": c.b, "mean_a": _num(t.mean_a), "mean_b": _num(t.mean_b), "diff": diff,
            "ci95_low": lo, "ci95_high": hi, "diff_text": diff_text, "p": _num(t.p), "p_text": _fmt_p(t.p),
            "n": int(t.n), "verdict": c.verdict, "why": c.why or getattr(t, "why", "") or "",
        })
    return out


def page_data(df: pd.DataFrame, records: Iterable[dict], title: str = "Leaderboard") -> dict:
    """Everything the page shows, as plain JSON-able data: groups of rows per (task, protocol) in the
    leaderboard's order (best first), the claims, and the records the rows point at (by `task/file`)."""
    by_key = {}
    for rec in records:
        if rec.get("_path"):  # the page shows the record as written: no reader-side path of this machine
            by_key[_record_key(rec["_path"])] = {k: v for k, v in rec.items() if k != "_path"}
    groups: dict[tuple[str, str], dict] = {}
    used: dict[str, dict] = {}
    missing = 0
    for i, (_, r) in enumerate(df.iterrows() if not df.empty else []):
        row = {k: _plain(r.get(k)) for k in _ROW_FIELDS if k in r}
        for k in ("score", "score_std", "ci95_low", "ci95_high", "std", "lr", "wall_time_s", "peak_memory_mb"):
            if k in row:
                row[k] = _num(row[k])
        units = r.get("units")
        row["units"] = _plain(list(units)) if isinstance(units, (list, tuple)) else []
        row["score_text"] = _score_text(str(r["metric"]), r.get("score"), r.get("ci95_low"), r.get("ci95_high"),
                                        r.get("std"))
        std = _num(r.get("std"))
        row["std_text"] = "" if std is None else fmt_score(str(r["metric"]), std)
        row["rank"] = None  # filled per group below
        keys = []
        for p in str(r.get("record") or "").split(";"):
            if not p:
                continue
            k = _record_key(p)
            keys.append({"key": k, "path": p})
            if k in by_key:
                used[k] = by_key[k]
            else:
                missing += 1
        row["records"] = keys
        g = groups.setdefault((str(r["task"]), str(r["protocol"])), {
            "task": str(r["task"]), "protocol": str(r["protocol"]), "metric": str(r["metric"]),
            "higher_is_better": bool(r.get("higher_is_better", True)), "rows": []})
        row["rank"] = len(g["rows"]) + 1
        g["rows"].append(row)
    commits = sorted({str(c) for c in df.get("git_commit", pd.Series(dtype=str)) if str(c)}) if not df.empty else []
    created = [str(c) for c in df.get("created", pd.Series(dtype=str)) if str(c)] if not df.empty else []
    return {
        "title": title,
        "groups": list(groups.values()),
        "claims": _claims(df) if not df.empty and "units" in df else [],
        "records": {k: {kk: vv for kk, vv in v.items()} for k, v in used.items()},
        "summary": {"rows": int(len(df)), "records": len(used), "missing_records": missing,
                    "upstreams": sorted({str(u) for u in df["upstream"]}) if not df.empty else [],
                    "tasks": sorted({str(t) for t in df["task"]}) if not df.empty else [],
                    "commits": sorted({c for cs in commits for c in cs.split(";") if c}),
                    "newest": max(created) if created else ""},
    }


_CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--bg:#fff;--panel:#f5f7fa;--line:#d9dee7;--accent:#2458b3;--hl:#fff6d6;
--good:#1b7f3b;--bad:#b3261e;--warn:#8a6100;--bar:#5b8def}
@media (prefers-color-scheme:dark){:root{--fg:#e4e7ee;--muted:#9aa3b5;--bg:#15181e;--panel:#1e232c;--line:#343b48;
--accent:#8ab4ff;--hl:#3a3520;--good:#6fcf8f;--bad:#ff8a80;--warn:#e0b94f;--bar:#6f9cf5}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1440px;margin:0 auto;padding:20px 24px 60px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 6px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}h4{font-size:13px;margin:12px 0 4px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
a{color:var(--accent)}.muted{color:var(--muted)}.small{font-size:12px}
code,.mono{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12px}
nav.toc{margin:10px 0 4px;display:flex;flex-wrap:wrap;gap:6px}
nav.toc a{padding:2px 8px;border:1px solid var(--line);border-radius:12px;text-decoration:none;font-size:12px}
p.legend{margin:6px 0;color:var(--muted);font-size:12.5px;max-width:980px}
.tablewrap{overflow-x:auto}
table{border-collapse:collapse;margin:4px 0 8px;min-width:480px}
th,td{padding:4px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top;white-space:nowrap}
td.wrap{white-space:normal;min-width:120px;max-width:260px}
th{background:var(--panel);font-weight:600;font-size:12.5px;position:sticky;top:0}
table.lb th,table.claims th{cursor:pointer;user-select:none}
table.lb th:hover,table.claims th:hover{color:var(--accent)}
th[aria-sort=ascending]::after{content:" \\25B2";font-size:10px}
th[aria-sort=descending]::after{content:" \\25BC";font-size:10px}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.row{cursor:pointer}tr.row:hover td{background:var(--panel)}
tr.row.open td{background:var(--hl)}
tr.row:focus{outline:2px solid var(--accent);outline-offset:-2px}
td.tog{width:18px;color:var(--muted)}
tr.row.open td.tog span{display:inline-block;transform:rotate(90deg)}
tr.detail>td{background:var(--panel);padding:10px 16px 14px;white-space:normal}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:4px 0}
.kv dt{color:var(--muted)}.kv dd{margin:0;overflow-wrap:anywhere}
table.sub{min-width:0;margin:2px 0 6px;background:var(--bg)}
table.sub th{position:static;cursor:default}
table.sub td,table.sub th{padding:2px 8px;font-size:12.5px}
tr.chosen td{background:var(--hl);font-weight:600}
.bars{display:grid;grid-template-columns:max-content 260px max-content;gap:2px 8px;align-items:center;font-size:12.5px}
.bar{height:11px;background:var(--bar);border-radius:2px;min-width:1px}
.badge{display:inline-block;padding:0 7px;border-radius:10px;font-size:12px;font-weight:600;border:1px solid currentColor}
.v-holds{color:var(--good)}.v-reversed{color:var(--bad)}.v-inconclusive{color:var(--warn)}
.rec{border-top:1px dashed var(--line);margin-top:10px;padding-top:6px}
.rec:first-child{border-top:0;margin-top:0;padding-top:0}
details.raw pre{max-height:360px;overflow:auto;background:var(--bg);border:1px solid var(--line);padding:8px;font-size:11.5px}
.cols{display:flex;flex-wrap:wrap;gap:8px 36px}
.cols>div{flex:1 1 440px;min-width:0}
table.lb,table.claims{width:100%}
table.claims td,table.claims th{padding:4px 8px;font-size:13px}
table.claims td.wrap{min-width:150px}
table.claims td.verdict{min-width:190px}
.up{font-weight:600}
"""

_JS = r"""
(function(){
'use strict';
var DATA = JSON.parse(document.getElementById('lb-data').textContent);
function el(tag, attrs, kids){
  var e = document.createElement(tag);
  if (attrs) for (var k in attrs) { if (attrs[k] !== null && attrs[k] !== undefined) {
    if (k === 'text') e.textContent = attrs[k]; else if (k === 'cls') e.className = attrs[k]; else e.setAttribute(k, attrs[k]); } }
  (kids || []).forEach(function(c){ if (c !== null && c !== undefined) e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c); });
  return e;
}
function isNum(v){ return typeof v === 'number' && isFinite(v); }
function fnum(v){
  if (!isNum(v)) return v === null || v === undefined ? '' : String(v);
  if (v === 0) return '0';
  var a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return Number(v.toPrecision(3)).toExponential().replace('e+', 'e');
  return String(+v.toPrecision(4));
}
function fsec(s){ if (!isNum(s)) return ''; if (s < 60) return s.toFixed(1) + ' s';
  if (s < 3600) return (s / 60).toFixed(1) + ' min'; return (s / 3600).toFixed(2) + ' h'; }
function short(s, n){ s = s === null || s === undefined ? '' : String(s); return s.length > n ? s.slice(0, n) : s; }
function compact(v){
  if (v === null || v === undefined) return '\u2014';
  if (Array.isArray(v)) { var parts = v.slice(0, 6).map(function(x){ return x === null ? '\u2014' : isNum(x) ? fnum(x) : (typeof x === 'object' ? JSON.stringify(x) : String(x)); });
    return parts.join(', ') + (v.length > 6 ? ', … (' + v.length + ')' : ''); }
  if (typeof v === 'object') return JSON.stringify(v);
  return isNum(v) ? fnum(v) : String(v);
}
function slug(s){ return String(s).replace(/[^A-Za-z0-9_-]+/g, '-'); }

// ---- sorting: numbers as numbers, empty last, strings numeric-aware; a second click reverses
var collator = new Intl.Collator(undefined, {numeric: true, sensitivity: 'base'});
function cmp(a, b){
  var ea = a === null || a === undefined || a === '', eb = b === null || b === undefined || b === '';
  if (ea || eb) return ea === eb ? 0 : (ea ? 1 : -1);
  if (isNum(a) && isNum(b)) return a - b;
  return collator.compare(String(a), String(b));
}
function makeSortable(table, cols, items, render){
  var ths = table.tHead.rows[0].cells, state = {i: -1, dir: 1};
  Array.prototype.forEach.call(ths, function(th, i){
    if (!cols[i].v) return;
    th.tabIndex = 0;
    th.title = 'sort by ' + cols[i].label;
    var go = function(){
      state.dir = state.i === i ? -state.dir : 1; state.i = i;
      var v = cols[i].v;
      items.sort(function(x, y){
        var c = cmp(v(x.d), v(y.d));
        if (c === 0) return x.n - y.n;
        var ex = v(x.d), ey = v(y.d);
        var empty = (ex === null || ex === undefined || ex === '') || (ey === null || ey === undefined || ey === '');
        return empty ? c : c * state.dir;
      });
      Array.prototype.forEach.call(ths, function(h){ h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', state.dir > 0 ? 'ascending' : 'descending');
      render();
    };
    th.addEventListener('click', go);
    th.addEventListener('keydown', function(e){ if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); go(); } });
  });
}

// ---- drill-down
function kv(pairs){
  var dl = el('dl', {cls: 'kv'});
  pairs.forEach(function(p){ if (p[1] === null || p[1] === undefined || p[1] === '') return;
    dl.appendChild(el('dt', {text: p[0]})); dl.appendChild(el('dd', {cls: p[2] || null, text: String(p[1])})); });
  return dl;
}
function sameVal(a, b){
  if (isNum(a) && isNum(b)) return Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a), Math.abs(b));
  return JSON.stringify(a) === JSON.stringify(b);
}
function gridTable(sel, rec){
  var grid = sel.grid || [], chosen = sel.chosen;
  if (!Array.isArray(grid) || !grid.length) return null;
  var entries = grid.map(function(g){ return (g && typeof g === 'object' && !Array.isArray(g)) ? g : {lr: g}; });
  if (!chosen || typeof chosen !== 'object') chosen = isNum(rec.lr) ? {lr: rec.lr} : {};
  var keys = [];
  entries.forEach(function(g){ Object.keys(g).forEach(function(k){ if (keys.indexOf(k) < 0) keys.push(k); }); });
  var ck = Object.keys(chosen).filter(function(k){ return keys.indexOf(k) >= 0; });
  var head = el('tr', null, keys.map(function(k){ return el('th', {text: k}); }).concat([el('th', {text: ''})]));
  var body = el('tbody');
  entries.forEach(function(g){
    var isChosen = ck.length > 0 && ck.every(function(k){ return sameVal(g[k], chosen[k]); });
    var tr = el('tr', {cls: isChosen ? 'chosen' : null}, keys.map(function(k){
      return el('td', {cls: isNum(g[k]) ? 'num' : null, text: compact(g[k])}); }));
    tr.appendChild(el('td', {text: isChosen ? '\u2605 chosen' : ''}));
    body.appendChild(tr);
  });
  return el('table', {cls: 'sub grid'}, [el('thead', null, [head]), body]);
}
function layerBars(w){
  if (!Array.isArray(w) || !w.length) return null;
  var max = Math.max.apply(null, w.filter(isNum).concat([1e-12]));
  var box = el('div', {cls: 'bars layer-weights'});
  w.forEach(function(x, i){
    box.appendChild(el('span', {cls: 'muted', text: 'layer ' + i}));
    var bar = el('div', {cls: 'bar'}); bar.style.width = (isNum(x) ? 100 * x / max : 0).toFixed(1) + '%';
    box.appendChild(el('div', null, [bar]));
    box.appendChild(el('span', {cls: 'mono', text: isNum(x) ? x.toFixed(3) : compact(x)}));
  });
  return box;
}
function unitsTable(units){
  if (!units || !units.length) return null;
  var seeds = [], folds = [], cell = {};
  units.forEach(function(u){ if (seeds.indexOf(u.seed) < 0) seeds.push(u.seed); if (folds.indexOf(u.fold) < 0) folds.push(u.fold);
    cell[u.seed + '\u0000' + u.fold] = u.score; });
  seeds.sort(cmp); folds.sort(cmp);
  var head = el('tr', null, [el('th', {text: 'seed \\ fold'})].concat(folds.map(function(f){ return el('th', {cls: 'num', text: String(f)}); })));
  var body = el('tbody', null, seeds.map(function(s){
    return el('tr', null, [el('td', {text: String(s)})].concat(folds.map(function(f){
      return el('td', {cls: 'num', text: fnum(cell[s + '\u0000' + f])}); }))); }));
  return el('table', {cls: 'sub units'}, [el('thead', null, [head]), body]);
}
function scalars(obj){
  var out = [];
  Object.keys(obj || {}).forEach(function(k){ var v = obj[k];
    if (isNum(v) || typeof v === 'string' || typeof v === 'boolean') out.push([k, isNum(v) ? fnum(v) : String(v)]); });
  return out;
}
function recordView(ref, row){
  var rec = DATA.records[ref.key], box = el('div', {cls: 'rec'});
  box.appendChild(el('h4', {text: 'record'}));
  box.appendChild(el('div', {cls: 'mono', text: ref.path}));
  if (!rec) { box.appendChild(el('p', {cls: 'muted', text: 'record file not found next to this page\u2019s results (only the leaderboard row is shown)'})); return box; }
  var sel = rec.selection || {}, ds = rec.dataset || {}, det = rec.details || {};
  var cols = el('div', {cls: 'cols'});
  var left = el('div');
  left.appendChild(kv([
    ['upstream', rec.upstream], ['options', rec.upstream_options && Object.keys(rec.upstream_options).length ? JSON.stringify(rec.upstream_options) : ''],
    ['checkpoint', rec.checkpoint, 'mono'], ['checkpoint sha256', rec.checkpoint_sha256, 'mono'],
    ['dataset', [ds.name, ds.profile].filter(Boolean).join(' / ')], ['dataset path', ds.path, 'mono'],
    ['manifest sha256', ds.manifest_sha256, 'mono'], ['split scored', rec.split],
    ['score', (isNum(rec.score) ? fnum(rec.score) : '') + ' ' + (rec.metric || '') + (rec.higher_is_better === false ? ' (lower is better)' : '')],
    ['lr', isNum(rec.lr) ? fnum(rec.lr) : ''], ['seed', rec.seed], ['head seeds', Array.isArray(rec.seeds) && rec.seeds.length ? rec.seeds.join(', ') : ''],
    ['commit', rec.git_commit, 'mono'], ['package', rec.package_version], ['wall time', fsec(rec.wall_time_s)],
    ['peak memory', isNum(rec.peak_memory_mb) ? fnum(rec.peak_memory_mb) + ' MB' : ''], ['created', rec.created],
    ['host', rec.host && Object.keys(rec.host).length ? Object.keys(rec.host).map(function(k){ return k + '=' + rec.host[k]; }).join(', ') : ''],
    ['command', rec.command, 'mono']
  ]));
  cols.appendChild(left);
  var right = el('div');
  right.appendChild(el('h4', {text: 'selection (on ' + (sel.on || '?') + ')'}));
  if (sel.criterion) right.appendChild(el('p', {cls: 'small muted', text: sel.criterion}));
  var gt = gridTable(sel, rec);
  right.appendChild(gt || el('p', {cls: 'muted small', text: 'no grid (nothing was swept)'}));
  if (sel.chosen && typeof sel.chosen === 'object') right.appendChild(el('p', {cls: 'small', text: 'chosen: ' + JSON.stringify(sel.chosen)}));
  if (sel.test_used_for_selection !== undefined) right.appendChild(el('p', {cls: 'small muted', text: 'test used for selection: ' + sel.test_used_for_selection}));
  var lb = layerBars(det.layer_weights);
  if (lb) { right.appendChild(el('h4', {text: 'layer weights (softmax)'})); right.appendChild(lb); }
  var sec = scalars(rec.secondary);
  if (sec.length) { right.appendChild(el('h4', {text: 'secondary metrics'})); right.appendChild(kv(sec)); }
  cols.appendChild(right);
  box.appendChild(cols);
  var raw = el('details', {cls: 'raw'}, [el('summary', {text: 'raw record (JSON)'})]);
  raw.addEventListener('toggle', function(){ if (raw.open && !raw.querySelector('pre'))
    raw.appendChild(el('pre', {text: JSON.stringify(rec, null, 1)})); });
  box.appendChild(raw);
  return box;
}
function detailView(row){
  var box = el('div', {cls: 'drill'});
  var head = el('div', {cls: 'cols'});
  var stats = kv([
    ['score', row.score_text + ' ' + row.metric], ['interval', row.ci_method], ['std over seeds', isNum(row.score_std) ? fnum(row.score_std) : ''],
    ['std over folds', row.std_text], ['seed(s)', row.seeds], ['fold(s)', row.folds], ['record(s)', row.records.length]
  ]);
  head.appendChild(el('div', null, [el('h4', {text: 'summary'}), stats]));
  var ut = unitsTable(row.units);
  if (ut) head.appendChild(el('div', null, [el('h4', {text: 'units (test score per seed and fold)'}), ut]));
  box.appendChild(head);
  if (row.records.length > 1) box.appendChild(el('p', {cls: 'small muted', text: row.records.length + ' records pooled into this row (one per seed)'}));
  row.records.forEach(function(ref){ box.appendChild(recordView(ref, row)); });
  return box;
}

// ---- leaderboard tables
var LB_COLS = [
  {label: '', cls: 'tog', d: function(){ return el('span', {text: '\u25B8'}); }},
  {label: '#', num: true, v: function(r){ return r.rank; }},
  {label: 'upstream', v: function(r){ return r.upstream; }, d: function(r){
    return el('span', null, [el('span', {cls: 'up', text: r.upstream}),
      r.checkpoint_sha256 ? el('span', {cls: 'muted mono', text: ' ' + short(r.checkpoint_sha256, 8)}) : null]); }},
  {label: 'score [95% CI]', num: true, v: function(r){ return r.score; }, d: function(r){ return r.score_text; }, title: function(r){ return r.ci_method || ''; }},
  {label: '\u00B1 std (folds)', num: true, v: function(r){ return isNum(r.std) ? r.std : null; }, d: function(r){ return r.std_text; }},
  {label: 'seeds', num: true, v: function(r){ return r.n_seeds; }},
  {label: 'units', num: true, v: function(r){ return r.units.length; }},
  {label: 'lr', num: true, v: function(r){ return r.lr; }, d: function(r){ return isNum(r.lr) ? fnum(r.lr) : ''; }},
  {label: 'selected on', v: function(r){ return r.selected_on; }},
  {label: 'dataset', v: function(r){ return [r.dataset, r.profile].filter(Boolean).join(' / '); }},
  {label: 'wall time', num: true, v: function(r){ return r.wall_time_s; }, d: function(r){ return fsec(r.wall_time_s); }},
  {label: 'commit', v: function(r){ return r.git_commit; }, d: function(r){ return el('span', {cls: 'mono', text: short(r.git_commit, 8)}); }}
];
function cellFor(c, r){
  var content = c.d ? c.d(r) : c.v(r);
  var td = el('td', {cls: (c.cls || '') + (c.num ? ' num' : '')});
  if (content instanceof Node) td.appendChild(content); else td.textContent = isNum(content) ? String(content) : (content === null || content === undefined ? '' : String(content));
  if (c.title) { var t = c.title(r); if (t) td.title = t; }
  return td;
}
function leaderboardTable(g){
  var table = el('table', {cls: 'lb', 'data-task': g.task, 'data-protocol': g.protocol});
  table.appendChild(el('thead', null, [el('tr', null, LB_COLS.map(function(c, i){
    return el('th', {cls: c.num ? 'num' : null, scope: 'col', 'aria-sort': i === 1 ? 'ascending' : null, text: c.label}); }))]));
  var tbody = el('tbody');
  table.appendChild(tbody);
  var items = g.rows.map(function(r, n){
    var tr = el('tr', {cls: 'row', tabindex: '0', 'aria-expanded': 'false', 'data-upstream': r.upstream},
                LB_COLS.map(function(c){ return cellFor(c, r); }));
    var det = el('tr', {cls: 'detail', hidden: ''}, [el('td', {colspan: String(LB_COLS.length)})]);
    var toggle = function(){
      var open = det.hasAttribute('hidden');
      if (open && !det.firstChild.firstChild) det.firstChild.appendChild(detailView(r));
      if (open) det.removeAttribute('hidden'); else det.setAttribute('hidden', '');
      tr.classList.toggle('open', open); tr.setAttribute('aria-expanded', String(open));
    };
    tr.addEventListener('click', function(e){ if (window.getSelection && String(window.getSelection()).length) return; toggle(); });
    tr.addEventListener('keydown', function(e){ if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); toggle(); } });
    return {d: r, n: n, tr: tr, det: det};
  });
  var render = function(){ items.forEach(function(it){ tbody.appendChild(it.tr); tbody.appendChild(it.det); }); };
  render();
  makeSortable(table, LB_COLS, items, render);
  // the initial order is the rank order ('#' ascending)
  return el('div', {cls: 'tablewrap'}, [table]);
}

// ---- claims
var CL_COLS = [
  {label: 'claim', cls: 'wrap', v: function(c){ return c.claim; }},
  {label: 'task / protocol (metric)', v: function(c){ return c.task + ' ' + c.protocol; }, d: function(c){
    return el('span', null, [el('a', {href: '#t-' + slug(c.task + '-' + c.protocol), text: c.task + ' / ' + c.protocol}),
      el('span', {cls: 'muted', text: ' (' + c.metric + ')'})]); }},
  {label: 'paper', cls: 'wrap', v: function(c){ return c.paper; }},
  {label: 'expected better', num: true, v: function(c){ return c.mean_a; }, d: function(c){ return c.a + ' ' + fnum(c.mean_a); }},
  {label: 'control', num: true, v: function(c){ return c.mean_b; }, d: function(c){ return c.b + ' ' + fnum(c.mean_b); }},
  {label: 'difference [95% CI]', num: true, v: function(c){ return c.diff; }, d: function(c){ return c.diff_text; }},
  {label: 'p', num: true, v: function(c){ return c.p; }, d: function(c){ return c.p_text; }},
  {label: 'units', num: true, v: function(c){ return c.n; }},
  {label: 'verdict', cls: 'wrap verdict', v: function(c){ return c.verdict; }, d: function(c){
    return el('span', null, [el('span', {cls: 'badge v-' + c.verdict, text: c.verdict}), c.why ? el('span', {cls: 'small muted', text: ' ' + c.why}) : null]); }}
];
function claimsTable(claims){
  var table = el('table', {cls: 'claims'});
  table.appendChild(el('thead', null, [el('tr', null, CL_COLS.map(function(c){ return el('th', {cls: c.num ? 'num' : null, scope: 'col', text: c.label}); }))]));
  var tbody = el('tbody'); table.appendChild(tbody);
  var items = claims.map(function(c, n){ return {d: c, n: n, tr: el('tr', null, CL_COLS.map(function(col){ return cellFor(col, c); }))}; });
  var render = function(){ items.forEach(function(it){ tbody.appendChild(it.tr); }); };
  render();
  makeSortable(table, CL_COLS, items, render);
  return el('div', {cls: 'tablewrap'}, [table]);
}

// ---- page
var root = document.getElementById('app'), S = DATA.summary;
root.textContent = '';
root.appendChild(el('p', {cls: 'muted', text: S.rows + ' leaderboard rows from ' + S.records + ' result records; ' +
  S.upstreams.length + ' upstreams (' + S.upstreams.join(', ') + '), ' + S.tasks.length + ' tasks' +
  (S.newest ? '; newest record ' + S.newest : '') + (S.commits.length ? '; commit' + (S.commits.length > 1 ? 's ' : ' ') + S.commits.map(function(c){ return short(c, 12); }).join(', ') : '') +
  (S.missing_records ? '; ' + S.missing_records + ' record file(s) not found' : '')}));
if (!DATA.groups.length) { root.appendChild(el('p', {text: 'No result records: run `bench run --upstream U --task T` first.'})); return; }
var toc = el('nav', {cls: 'toc'});
if (DATA.claims.length) toc.appendChild(el('a', {href: '#claims', text: 'claims'}));
DATA.groups.forEach(function(g){ toc.appendChild(el('a', {href: '#t-' + slug(g.task + '-' + g.protocol), text: g.task + ' / ' + g.protocol})); });
root.appendChild(toc);
root.appendChild(el('p', {cls: 'legend', text: 'Scores are means over seeds (and folds); [a, b] is the 95 % t-interval over the seed \u00D7 fold units ' +
  '(hover a score for how many), \u00B1 the std over folds. Click a column header to sort (again to reverse); click a row for its record: ' +
  'the validation grid with the chosen point, layer weights, units, checkpoint and manifest hashes, commit and wall time.'}));
if (DATA.claims.length) {
  var sec = el('section', {id: 'claims'}, [el('h2', {text: 'The papers\u2019 claims beside the measurements'}),
    el('p', {cls: 'legend', text: 'A claim holds only when a paired t-test over the units both upstreams share gives p < 0.05 in the paper\u2019s direction; reversed when significant the other way; inconclusive otherwise.'})]);
  if (DATA.claims[0].error) sec.appendChild(el('p', {cls: 'muted', text: DATA.claims[0].error})); else sec.appendChild(claimsTable(DATA.claims));
  root.appendChild(sec);
}
var lastTask = null;
DATA.groups.forEach(function(g){
  if (g.task !== lastTask) { root.appendChild(el('h2', {text: g.task})); lastTask = g.task; }
  var s = el('section', {id: 't-' + slug(g.task + '-' + g.protocol), cls: 'group'});
  s.appendChild(el('h3', null, [g.protocol + ' ', el('span', {cls: 'muted', text: '(' + g.metric + ', ' + (g.higher_is_better ? 'higher' : 'lower') + ' is better)'})]));
  s.appendChild(leaderboardTable(g));
  root.appendChild(s);
});
})();
"""


def render_html(df: pd.DataFrame, records: Iterable[dict], title: str = "Leaderboard") -> str:
    """The page as a string (see the module docstring)."""
    data = page_data(df, records, title)
    t = html.escape(title)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:\">\n"
        "<link rel=\"icon\" href=\"data:,\">\n"
        f"<title>{t}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n<h1>{t}</h1>\n"
        "<div id=\"app\"><noscript>This page renders its tables with JavaScript; the data is in the "
        "<code>lb-data</code> element of its source (and in leaderboard.csv).</noscript></div>\n"
        "</main>\n"
        f"<script type=\"application/json\" id=\"lb-data\">{strict_json(data)}</script>\n"
        f"<script>{_JS}</script>\n</body>\n</html>\n"
    )


def write_html(df: pd.DataFrame, records: Iterable[dict], out_dir: str | Path, title: str = "Leaderboard") -> Path:
    """Write `<out_dir>/index.html` (atomically) from the leaderboard `df` and the records its rows name."""
    path = Path(out_dir) / "index.html"
    atomic_write_text(path, render_html(df, records, title))
    return path
