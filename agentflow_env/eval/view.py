"""Trajectory viewer: EpisodeRecord JSONL -> one self-contained HTML report.

    python -m agentflow_env.view TRAJ.jsonl [MORE.jsonl ...] -o report.html
    python -m agentflow_env.view runs/flow_grpo --steps 90-100 -o report.html   # a training run

Reads what evaluation, ``RecordTrajectory`` and the Flow-GRPO trainer write (one
:class:`~agentflow_env.trajectory.EpisodeRecord` per line); a directory stands for the trainer's
``trajectories.jsonl`` and ``trajectories-rank{r}.jsonl`` in it. Each episode is shown as a
timeline of planner turns (plan fields, tool call, result, verifier decision), with the final
answer next to the ground truth and the score. Filters (outcome, tools used, free text, and the
training step and group when the records carry ``metadata["step"]``/``["group"]``) run in the
page; they can be preset from the URL fragment, e.g.
``report.html#outcome=incorrect&tool=Search_Tool&q=varnok`` or ``#step=3&group=1`` (add
``&open=1`` to expand the episodes shown).

Safety: the file loads nothing from the network (inline CSS and JS, a Content-Security-Policy
that allows only the page's own script by its hash). All trajectory text is HTML-escaped; the
page's script never turns data into markup (it only shows and hides server-rendered elements and
sets ``textContent``), and the JSON it reads is escaped so that ``</script>`` or ``<!--`` inside
data cannot end the script element.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from agentflow_env.runfiles import atomic_write_text, check_writable
from agentflow_env.trajectory import EpisodeRecord, TurnRecord, read_jsonl

__all__ = [
    "json_for_script",
    "main",
    "outcome_of",
    "parse_steps",
    "render_html",
    "trajectory_files",
    "write_report",
]

OUTCOMES = ("correct", "partial", "incorrect", "unscored")
PICKS = ("step", "group")
"""integer metadata (written by the trainer) the page offers a filter for"""
_LONG = 600
"""texts longer than this are folded into a <details> element"""

_CSS = """
:root{--ok:#17803d;--bad:#b42318;--mid:#b54708;--none:#667085;--line:#d0d5dd;--bg:#f8f9fb}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
margin:0;background:var(--bg);color:#101828}header,main,#filters{max-width:1180px;margin:0 auto;
padding:12px 20px}h1{font-size:22px;margin:8px 0}.stats{display:flex;flex-wrap:wrap;gap:10px}
.stat{background:#fff;border:1px solid var(--line);border-radius:8px;padding:8px 12px}
.stat b{display:block;font-size:18px}#filters{position:sticky;top:0;background:var(--bg);z-index:2;
border-bottom:1px solid var(--line);display:flex;flex-wrap:wrap;gap:14px;align-items:center}
#filters fieldset{border:1px solid var(--line);border-radius:6px;padding:4px 8px;margin:0}
#filters legend{font-size:12px;color:var(--none)}#count{font-weight:600}
.episode{background:#fff;border:1px solid var(--line);border-left:6px solid var(--none);
border-radius:8px;margin:14px 0;padding:10px 14px}.episode.correct{border-left-color:var(--ok)}
.episode.incorrect{border-left-color:var(--bad)}.episode.partial{border-left-color:var(--mid)}
.episode>summary{cursor:pointer;list-style:none}.episode>summary::-webkit-details-marker{display:none}
.eh{display:flex;flex-wrap:wrap;gap:8px;align-items:baseline}\
.badge{border-radius:10px;padding:1px 8px;
font-size:12px;font-weight:600;color:#fff;background:var(--none)}.badge.correct{background:var(--ok)}
.badge.incorrect{background:var(--bad)}.badge.partial{background:var(--mid)}.muted{color:var(--none);font-size:12px}
.question{font-weight:600;margin:6px 0;white-space:pre-wrap}.answers{display:grid;
grid-template-columns:max-content 1fr;gap:2px 12px;margin:6px 0}.answers dt{color:var(--none)}
.answers dd{margin:0;white-space:pre-wrap}\
ol.timeline{list-style:none;margin:8px 0 4px;padding:0 0 0 14px;
border-left:2px solid var(--line)}.turn{position:relative;margin:0 0 12px;padding-left:10px}
.turn::before{content:"";position:absolute;left:-21px;top:6px;width:12px;height:12px;border-radius:50%;
background:#fff;border:2px solid #475467}.turn.err::before{border-color:var(--bad)}
.th{display:flex;flex-wrap:wrap;gap:8px;font-weight:600}.tool{background:#eef4ff;color:#3538cd;
border-radius:4px;padding:0 6px}.verifier{border-radius:4px;padding:0 6px;background:#f2f4f7}
.verifier.STOP{background:#dcfae6;color:var(--ok)}\
dl.plan{display:grid;grid-template-columns:max-content 1fr;
gap:2px 10px;margin:4px 0}dl.plan dt{color:var(--none)}dl.plan dd{margin:0;white-space:pre-wrap}
pre{background:#f2f4f7;border-radius:6px;padding:6px 8px;margin:3px 0;white-space:pre-wrap;
word-break:break-word;max-height:420px;overflow:auto;\
font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}
.error{color:var(--bad);white-space:pre-wrap}.label{color:var(--none);font-size:12px;margin-top:4px}
table.tools{border-collapse:collapse}\
table.tools td,table.tools th{border:1px solid var(--line);padding:2px 8px}
"""

_JS = """
(function(){
  "use strict";
  var meta = JSON.parse(document.getElementById("af-meta").textContent);
  var outcome = document.getElementById("f-outcome");
  var query = document.getElementById("f-text");
  var picks = ["step", "group"].map(function(key){
    return {key: key, el: document.getElementById("f-" + key)};
  }).filter(function(p){ return p.el; });
  var boxes = Array.prototype.slice.call(document.querySelectorAll("input.f-tool"));
  var episodes = Array.prototype.slice.call(document.querySelectorAll("details.episode"));
  var count = document.getElementById("count");
  function selectedTools(){ return boxes.filter(function(b){return b.checked;})\
.map(function(b){return b.value;}); }
  function apply(){
    var want = outcome.value, tools = selectedTools(), text = query.value.trim().toLowerCase(), \
shown = 0;
    var allTools = tools.length === boxes.length;
    episodes.forEach(function(ep){
      var used = ep.getAttribute("data-tools").split(" ").filter(Boolean);
      var okOutcome = want === "all" || ep.getAttribute("data-outcome") === want;
      var okTool = allTools || used.some(function(t){return tools.indexOf(t) >= 0;}) ||
                   (used.length === 0 && tools.indexOf("none") >= 0);
      var okText = !text || ep.textContent.toLowerCase().indexOf(text) >= 0;
      var okPicks = picks.every(function(p){
        return p.el.value === "all" || ep.getAttribute("data-" + p.key) === p.el.value;
      });
      var show = okOutcome && okTool && okText && okPicks;
      ep.hidden = !show;
      if (show) { shown += 1; }
    });
    count.textContent = "Showing " + shown + " of " + episodes.length + " episodes";
    var params = new URLSearchParams();
    if (want !== "all") { params.set("outcome", want); }
    picks.forEach(function(p){ if (p.el.value !== "all") { params.set(p.key, p.el.value); } });
    if (!allTools) { tools.forEach(function(t){ \
params.append("tool", t === "none" ? "none" : meta.tools[+t]); }); }
    if (text) { params.set("q", query.value.trim()); }
    var hash = params.toString();
    if (history.replaceState) { \
history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search); }
  }
  function fromHash(){
    var params = new URLSearchParams((location.hash || "").replace(/^#/, "") || \
location.search.replace(/^\\?/, ""));
    var want = params.get("outcome");
    if (want && meta.outcomes.indexOf(want) >= 0) { outcome.value = want; }
    var tools = params.getAll("tool");
    if (tools.length) {
      boxes.forEach(function(b){
        var name = b.value === "none" ? "none" : meta.tools[+b.value];
        b.checked = tools.indexOf(name) >= 0;
      });
    }
    if (params.get("q")) { query.value = params.get("q"); }
    picks.forEach(function(p){
      var value = params.get(p.key);
      var known = Array.prototype.some.call(p.el.options, function(o){ return o.value === value; });
      if (value !== null && known) { p.el.value = value; }
    });
  }
  outcome.addEventListener("change", apply);
  query.addEventListener("input", apply);
  picks.forEach(function(p){ p.el.addEventListener("change", apply); });
  boxes.forEach(function(b){ b.addEventListener("change", apply); });
  document.getElementById("f-expand").addEventListener("click", function(){
    var open = this.getAttribute("data-open") !== "1";
    episodes.forEach(function(ep){ if (!ep.hidden) { ep.open = open; } });
    this.setAttribute("data-open", open ? "1" : "0");
    this.textContent = open ? "Collapse all" : "Expand all";
  });
  // Read before apply(): apply() rewrites the fragment to the current filters only.
  var expand = /(^|[#&?])open=1(&|$)/.test(location.hash + "&" + location.search);
  fromHash();
  apply();
  if (expand) {
    episodes.forEach(function(ep){ if (!ep.hidden) { ep.open = true; } });
    var button = document.getElementById("f-expand");
    button.setAttribute("data-open", "1");
    button.textContent = "Collapse all";
  }
  document.documentElement.setAttribute("data-ready", "1");
})();
"""


def _e(value: object) -> str:
    """Escape for element content and quoted attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


def json_for_script(value: object) -> str:
    """JSON that is safe inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` become ``\\u003c``-style escapes (still the same JSON value), so no
    ``</script>`` or ``<!--`` can appear; U+2028/U+2029 are escaped for old parsers.
    """
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


def outcome_of(record: EpisodeRecord, correct_threshold: float = 1.0) -> str:
    """``correct`` (score >= threshold), ``partial`` (0 < score < threshold), ``incorrect``, or
    ``unscored`` (no score: infrastructure failed, or the episode never ended)."""
    score = record.score
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return "unscored"
    if score >= correct_threshold - 1e-9:
        return "correct"
    return "partial" if score > 0 else "incorrect"


def _int_meta(record: EpisodeRecord, key: str) -> int | None:
    value = record.metadata.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _clip(text: str | None, max_chars: int) -> str:
    text = text or ""
    if len(text) > max_chars:
        return text[:max_chars] + f"\n...[{len(text) - max_chars} more characters not shown]"
    return text


def _block(label: str, text: str | None, max_chars: int, css: str = "") -> str:
    """A labelled <pre>; long texts are folded into <details>."""
    if not text:
        return ""
    body = f'<pre class="{css}">{_e(_clip(text, max_chars))}</pre>'
    if len(text) > _LONG:
        return (
            f'<details class="long"><summary class="label">{_e(label)} '
            f"({len(text):,} characters)</summary>{body}</details>"
        )
    return f'<div class="label">{_e(label)}</div>{body}'


def _turn_html(turn: TurnRecord, max_chars: int) -> str:
    # The env records a finishing step without a tool and with the result "Finished.".
    tool = turn.tool_name or (
        "Finish" if turn.tool_result == "Finished." and not turn.error else "no tool"
    )
    verifier = turn.verifier or "-"
    reward = "none (infrastructure failed)" if turn.reward is None else f"{turn.reward:g}"
    head = (
        f'<div class="th"><span>Turn {turn.turn}</span><span class="tool">{_e(tool)}</span>'
        f'<span class="verifier {_e(verifier if verifier in ("STOP", "CONTINUE") else "")}">'
        f'Verifier: {_e(verifier)}</span><span class="muted">reward {reward}</span></div>'
    )
    plan = "".join(
        f"<dt>{name}</dt><dd>{_e(_clip(value, max_chars))}</dd>"
        for name, value in (
            ("Justification", turn.justification),
            ("Context", turn.context),
            ("Sub-Goal", turn.sub_goal),
        )
        if value
    )
    parts = [head]
    if plan:
        parts.append(f'<dl class="plan">{plan}</dl>')
    parts.append(_block("Tool call", turn.tool_input, max_chars))
    parts.append(_block("Result", turn.tool_result, max_chars))
    if turn.error:
        parts.append(f'<div class="error">Error: {_e(_clip(turn.error, max_chars))}</div>')
    parts.append(
        f'<details><summary class="label">Action as written</summary>'
        f"<pre>{_e(_clip(turn.action, max_chars))}</pre></details>"
    )
    css = "turn err" if turn.error else "turn"
    return f'<li class="{css}">{"".join(p for p in parts if p)}</li>'


def _episode_html(
    index: int,
    record: EpisodeRecord,
    tool_index: dict[str, int],
    threshold: float,
    max_chars: int,
    is_open: bool,
) -> str:
    outcome = outcome_of(record, threshold)
    used = sorted({tool_index[t.tool_name] for t in record.turns if t.tool_name in tool_index})
    score = "-" if record.score is None else f"{record.score:.3g}"
    ending = (
        "terminated" if record.terminated else "truncated" if record.truncated else "unfinished"
    )
    picked = {key: _int_meta(record, key) for key in (*PICKS, "rank")}
    where = "".join(f"{key} {value} · " for key, value in picked.items() if value is not None)
    summary = (
        f'<summary><div class="eh"><span class="badge {outcome}">{outcome}</span>'
        f'<span>score {_e(score)}</span><span class="muted">{where}{_e(record.episode_id)} · '
        f"task {_e(record.task_id)} · {record.num_turns} turn(s) · {ending}</span></div>"
        f'<div class="question">{_e(_clip(record.question, max_chars))}</div></summary>'
    )
    answers = (
        '<dl class="answers"><dt>Final answer</dt>'
        f"<dd>{_e(_clip(record.answer, max_chars)) or '<i>none</i>'}"
        f"</dd><dt>Ground truth</dt><dd>{_e(_clip(record.ground_truth, max_chars))}</dd>"
    )
    if record.infra_error is not None:  # no outcome: neither right nor wrong
        answers += (
            "<dt>Infrastructure failure (not scored)</dt>"
            f'<dd class="error">{_e(str(record.infra_error))}</dd>'
        )
    elif record.score_error:
        answers += f'<dt>Score error</dt><dd class="error">{_e(record.score_error)}</dd>'
    answers += "</dl>"
    turns = "".join(_turn_html(t, max_chars) for t in record.turns)
    meta = ""
    if record.metadata:
        meta_text = json.dumps(
            record.metadata, indent=1, ensure_ascii=False, sort_keys=True, default=str
        )
        meta = (
            '<details><summary class="label">Metadata</summary>'
            f"<pre>{_e(_clip(meta_text, max_chars))}</pre></details>"
        )
    data = "".join(f' data-{key}="{picked[key]}"' for key in PICKS if picked[key] is not None)
    return (
        f'<details class="episode {outcome}" id="ep-{index}" data-outcome="{outcome}"{data}'
        f"{' open' if is_open else ''} "
        f'data-tools="{" ".join(map(str, used))}">{summary}{answers}'
        f'<ol class="timeline">{turns}</ol>{meta}</details>'
    )


def _stats_html(
    records: Sequence[EpisodeRecord], outcomes: Counter[str], tool_counts: Counter[str]
) -> str:
    n = len(records)
    scores = [r.score for r in records if r.score is not None and not math.isnan(r.score)]
    mean_score = f"{sum(scores) / len(scores):.3f}" if scores else "-"
    success = f"{outcomes['correct'] / n:.1%}" if n else "-"
    mean_turns = f"{sum(r.num_turns for r in records) / n:.2f}" if n else "-"
    cells = [
        ("Episodes", str(n)),
        ("Correct", f"{outcomes['correct']} ({success})"),
        ("Mean score", mean_score),
        ("Mean turns", mean_turns),
    ] + [(o.capitalize(), str(outcomes[o])) for o in OUTCOMES[1:] if outcomes[o]]
    stats = "".join(
        f'<div class="stat">{_e(label)}<b>{_e(value)}</b></div>' for label, value in cells
    )
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{count}</td></tr>" for name, count in tool_counts.most_common()
    )
    table = (
        f'<table class="tools"><tr><th>Tool</th><th>Calls</th></tr>{rows}</table>' if rows else ""
    )
    return f'<div class="stats">{stats}</div>{table}'


def _pick_filters(records: Sequence[EpisodeRecord]) -> str:
    """A select per :data:`PICKS` key that some record carries (e.g. a training run's step)."""
    out = []
    for key in PICKS:
        counts = Counter(v for r in records if (v := _int_meta(r, key)) is not None)
        if not counts:
            continue
        options = "".join(f'<option value="{v}">{v} ({counts[v]})</option>' for v in sorted(counts))
        out.append(
            f'<label>{key.capitalize()} <select id="f-{key}">'
            f'<option value="all">all ({len(records)})</option>{options}</select></label>'
        )
    return "".join(out)


def render_html(
    records: Iterable[EpisodeRecord],
    *,
    title: str = "AgentFlow trajectories",
    source: str = "",
    correct_threshold: float = 1.0,
    max_chars: int = 20_000,
    open_limit: int = 30,
) -> str:
    """The report as one HTML string (no external resources).

    Episodes start expanded when there are at most ``open_limit`` of them, else collapsed.
    """
    if max_chars < 100:
        raise ValueError(f"max_chars must be >= 100, got {max_chars}")
    records = list(records)
    tool_counts: Counter[str] = Counter(
        t.tool_name for r in records for t in r.turns if t.tool_name
    )
    tools = sorted(tool_counts)
    tool_index = {name: i for i, name in enumerate(tools)}
    outcomes: Counter[str] = Counter(outcome_of(r, correct_threshold) for r in records)
    meta = {"tools": tools, "outcomes": list(OUTCOMES), "episodes": len(records), "source": source}
    options = "".join(f'<option value="{o}">{o} ({outcomes[o]})</option>' for o in OUTCOMES)
    checks = "".join(
        f'<label><input type="checkbox" class="f-tool" value="{i}" checked> {_e(name)}</label> '
        for i, name in enumerate(tools)
    )
    checks += '<label><input type="checkbox" class="f-tool" value="none" checked> no tool</label>'
    is_open = len(records) <= open_limit
    episodes = "".join(
        _episode_html(i, r, tool_index, correct_threshold, max_chars, is_open)
        for i, r in enumerate(records)
    )
    script_hash = base64.b64encode(hashlib.sha256(_JS.encode("utf-8")).digest()).decode("ascii")
    csp = (
        f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'; "
        "img-src 'none'; connect-src 'none'; form-action 'none'; base-uri 'none'"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1>"
        + (f'<div class="muted">Source: {_e(source)}</div>' if source else "")
        + f"{_stats_html(records, outcomes, tool_counts)}</header>"
        '<nav id="filters" aria-label="Filters"><label>Outcome <select id="f-outcome">'
        f'<option value="all">all ({len(records)})</option>{options}</select></label>'
        f"{_pick_filters(records)}"
        f"<fieldset><legend>Tools used</legend>{checks}</fieldset>"
        '<label>Text <input type="search" id="f-text" placeholder="filter by text"></label>'
        f'<button type="button" id="f-expand" data-open="{int(is_open)}">'
        f"{'Collapse all' if is_open else 'Expand all'}</button>"
        '<span id="count"></span></nav>'
        f"<main>{episodes or '<p>No episodes.</p>'}</main>"
        f'<script type="application/json" id="af-meta">{json_for_script(meta)}</script>'
        f"<script>{_JS}</script></body></html>\n"
    )


def trajectory_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files to read: each path itself, or for a directory (a training run) its
    ``trajectories.jsonl`` and ``trajectories-rank{r}.jsonl`` by rank."""
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            ranks = sorted(
                (int(m.group(1)), f)
                for f in path.glob("trajectories-rank*.jsonl")
                if (m := re.fullmatch(r"trajectories-rank(\d+)\.jsonl", f.name))
            )
            main_file = path / "trajectories.jsonl"
            found = ([main_file] if main_file.is_file() else []) + [f for _, f in ranks]
            if not found:
                raise FileNotFoundError(
                    f"no trajectories.jsonl or trajectories-rank<r>.jsonl in directory {path}"
                )
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"no such trajectory file: {path}")
    return out


def parse_steps(text: str) -> tuple[int, int | None]:
    """``"N"``, ``"A-B"`` or ``"A-"`` (inclusive) -> (first, last or None)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:(-)\s*(\d+)?)?\s*", text)
    if match is None:
        raise ValueError(f"steps must be N, A-B or A- (e.g. 5, 10-20, 90-), got {text!r}")
    first = int(match.group(1))
    last = int(match.group(3)) if match.group(3) else None if match.group(2) else first
    if last is not None and last < first:
        raise ValueError(f"steps {text!r}: the last step is before the first")
    return first, last


def write_report(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    title: str | None = None,
    correct_threshold: float = 1.0,
    max_chars: int = 20_000,
    max_episodes: int | None = None,
    steps: tuple[int, int | None] | None = None,
) -> Path:
    """Read JSONL trajectories from ``paths`` (files, or training-run directories) and write the
    report to ``out``.

    ``steps`` keeps only records whose ``metadata["step"]`` is in ``[first, last]`` (``last``
    None: no end). Records that carry a step are shown by step, then group.
    """
    if not paths:
        raise ValueError("give at least one trajectory file")
    files = trajectory_files(paths)
    records: list[EpisodeRecord] = []
    for path in files:
        for record in read_jsonl(path):
            if max_episodes is not None and len(records) >= max_episodes:
                break
            step = _int_meta(record, "step")
            if steps is not None and (
                step is None or step < steps[0] or (steps[1] is not None and step > steps[1])
            ):
                continue
            if len(files) > 1:
                record.metadata.setdefault("file", str(path))
            records.append(record)
    if any(_int_meta(r, "step") is not None for r in records):
        records.sort(key=lambda r: tuple(_int_meta(r, k) or 0 for k in PICKS))
    source = ", ".join(str(p) for p in paths)
    page = render_html(
        records,
        title=title or _default_title(paths),
        source=source,
        correct_threshold=correct_threshold,
        max_chars=max_chars,
    )
    out = Path(out)
    atomic_write_text(out, page)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agentflow_env.view",
        description="Render EpisodeRecord JSONL trajectories as one self-contained HTML file.",
    )
    parser.add_argument(
        "paths", nargs="+", help="trajectory JSONL file(s), or a training run's output directory"
    )
    parser.add_argument(
        "-o", "--out", default="report.html", help="output HTML path (default: report.html)"
    )
    parser.add_argument("--title", default=None, help="page title")
    parser.add_argument(
        "--correct-threshold",
        type=float,
        default=1.0,
        help="a score at or above this counts as correct (default 1.0)",
    )
    parser.add_argument(
        "--max-chars", type=int, default=20_000, help="cut any one text field at this length"
    )
    parser.add_argument(
        "--max-episodes", type=int, default=None, help="show at most this many episodes"
    )
    parser.add_argument(
        "--steps",
        default=None,
        help="only these training steps: N, A-B or A- (records without a step are left out)",
    )
    return parser


def _default_title(paths: Sequence[str | Path]) -> str:
    more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
    return f"AgentFlow trajectories: {Path(paths[0]).name}{more}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        steps = None if args.steps is None else parse_steps(args.steps)
        check_writable(args.out, "-o")  # before reading anything
        trajectory_files(args.paths)
        out = write_report(
            args.paths,
            args.out,
            title=args.title,
            correct_threshold=args.correct_threshold,
            max_chars=args.max_chars,
            max_episodes=args.max_episodes,
            steps=steps,
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
