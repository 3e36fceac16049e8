"""The trajectory viewer: structure of the report, escaping of hostile text, the CLI, a real
browser."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow_env import AgentFlowEnv
from agentflow_env.eval.view import (
    _JS,
    json_for_script,
    main,
    outcome_of,
    parse_steps,
    render_html,
    write_report,
)
from agentflow_env.trajectory import EpisodeRecord, TurnRecord, write_jsonl
from agentflow_env.wrappers import RecordTrajectory
from tests.agentflow_env.helpers import (
    CHROMIUM,
    Page,
    browser_dom,
    finish_action,
    lookup_action,
    lookup_env_kwargs,
)

HOSTILE = [
    "<script>alert(1)</script>",
    "</script><script>alert(2)</script>",
    "<!-- <script>alert(3)</script>",
    '" onmouseover="alert(4)" x="',
    "' onfocus='alert(5)' autofocus '",
    '<a href="javascript:alert(6)">click</a>',
    "javascript:alert(7)",
    "<img src=x onerror=alert(8)>",
    "</textarea></pre></details><iframe src=//evil>",
    "&lt;already escaped&gt; & ampersand \u2028 line sep",
]
ALLOWED_TAGS = {
    "html",
    "head",
    "meta",
    "title",
    "style",
    "body",
    "header",
    "h1",
    "div",
    "b",
    "table",
    "tr",
    "th",
    "td",
    "nav",
    "label",
    "select",
    "option",
    "fieldset",
    "legend",
    "input",
    "button",
    "span",
    "main",
    "details",
    "summary",
    "dl",
    "dt",
    "dd",
    "ol",
    "li",
    "pre",
    "i",
    "script",
    "p",
}


def hostile_records() -> list[EpisodeRecord]:
    records = []
    for i, text in enumerate(HOSTILE):
        turns = [
            TurnRecord(
                turn=1,
                action=f"Tool Name: Search_Tool\nCommand: {text}",
                sub_goal=text,
                justification=text,
                context=text,
                tool_name="Search_Tool" if i % 2 else text,
                tool_input=text,
                tool_result=f"Doc 1 {text}",
                verifier="CONTINUE",
            ),
            TurnRecord(
                turn=2,
                action=f"<answer>{text}</answer>",
                tool_result="Finished.",
                verifier=text,
                error=text if i % 3 == 0 else None,
                reward=float(i % 2),
            ),
        ]
        records.append(
            EpisodeRecord(
                episode_id=f"ep{i}{text}",
                task_id=text,
                question=f"Q{i}: {text}",
                ground_truth=text,
                answer=text,
                score=float(i % 2),
                terminated=True,
                turns=turns,
                metadata={"note": text},
            )
        )
    return records


def test_hostile_text_is_shown_as_text_and_injects_no_markup() -> None:
    records = hostile_records()
    page_text = render_html(
        records, title="<script>alert('title')</script>", source='x" onload="alert(9)'
    )
    page = Page(page_text)
    tags = {t for t, _ in page.tags}
    assert tags <= ALLOWED_TAGS, tags - ALLOWED_TAGS
    assert not {"a", "img", "iframe", "textarea", "form", "object", "embed"} & tags
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name, value)
            assert "javascript:" not in (value or "").lower(), (tag, name, value)
            assert name not in ("href", "src", "action", "formaction"), (tag, name)
    assert len(page.scripts) == 2, "only the page's own two scripts"
    (meta_attrs, meta_body), (js_attrs, js_body) = page.scripts
    assert meta_attrs == {"type": "application/json", "id": "af-meta"} and js_attrs == {}
    assert js_body == _JS, "the page script is exactly the viewer's own"
    assert "</" not in meta_body and "<!--" not in meta_body
    meta = json.loads(meta_body)
    assert set(meta["tools"]) == {"Search_Tool", *HOSTILE[::2]} and meta["episodes"] == len(HOSTILE)
    text = "".join(page.text)
    for hostile in HOSTILE:
        assert f"Q{HOSTILE.index(hostile)}: {hostile}" in text, hostile
    assert "<script>alert('title')</script>" in text


def test_page_allows_only_its_own_script_by_hash_and_loads_nothing() -> None:
    page_text = render_html(hostile_records())
    page = Page(page_text)
    csp = next(
        a["content"]
        for t, a in page.tags
        if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    )
    digest = base64.b64encode(hashlib.sha256(page.scripts[1][1].encode()).digest()).decode()
    assert (
        f"script-src 'sha256-{digest}'" in csp
        and "default-src 'none'" in csp
        and "connect-src 'none'" in csp
    )
    assert "http://" not in page_text and "https://" not in page_text, (
        "no external resource of any kind"
    )
    assert not [
        a for t, a in page.tags if t in ("link", "img", "iframe") or "src" in a or "href" in a
    ]


def test_episode_timeline_structure_outcomes_and_tool_filters() -> None:
    records = [
        EpisodeRecord(
            episode_id="a",
            task_id="t1",
            question="q1",
            ground_truth="x",
            answer="x",
            score=1.0,
            terminated=True,
            turns=[
                TurnRecord(
                    turn=1,
                    action="a1",
                    sub_goal="find x",
                    justification="why",
                    tool_name="Search_Tool",
                    tool_input="x?",
                    tool_result="x is here",
                    verifier="CONTINUE",
                ),
                TurnRecord(
                    turn=2,
                    action="<answer>x</answer>",
                    tool_result="Finished.",
                    verifier="STOP",
                    reward=1.0,
                ),
            ],
        ),
        EpisodeRecord(
            episode_id="b",
            task_id="t2",
            question="q2",
            ground_truth="y",
            answer="z",
            score=0.0,
            truncated=True,
            turns=[TurnRecord(turn=1, action="bad", error="missing field", tool_result="Error")],
        ),
        EpisodeRecord(
            episode_id="c",
            task_id="t3",
            question="q3",
            ground_truth="y",
            answer="y z",
            score=0.5,
            terminated=True,
            turns=[
                TurnRecord(
                    turn=1,
                    action="p",
                    tool_name="Python_Coder_Tool",
                    tool_input="print(1)",
                    tool_result="1" * 5000,
                )
            ],
        ),
        EpisodeRecord(
            episode_id="d",
            task_id="t4",
            question="q4",
            ground_truth="y",
            score=None,
            score_error="JudgeError: timeout",
        ),
    ]
    page = Page(render_html(records, max_chars=1000))
    episodes = page.by_class("details", "episode")
    assert [e["data-outcome"] for e in episodes] == ["correct", "incorrect", "partial", "unscored"]
    meta = json.loads(page.scripts[0][1])
    assert meta["tools"] == ["Python_Coder_Tool", "Search_Tool"]
    assert [e["data-tools"] for e in episodes] == ["1", "", "0", ""]
    assert len(page.by_class("li", "turn")) == 4 and len(page.by_class("li", "err")) == 1
    text = "".join(page.text)
    for expected in (
        "Turn 1",
        "Search_Tool",
        "Verifier: STOP",
        "Finish",
        "find x",
        "Ground truth",
        "missing field",
        "JudgeError: timeout",
        "4000 more characters not shown",
        "truncated",
        "Correct1 (25.0%)",
        "Mean score0.5",
    ):
        assert expected in text, expected
    options = [a["value"] for t, a in page.tags if t == "option"]
    assert options == ["all", "correct", "partial", "incorrect", "unscored"]
    assert [a["value"] for a in page.by_class("input", "f-tool")] == ["0", "1", "none"]
    assert "open" in episodes[0], "few episodes start expanded"
    assert "open" not in Page(render_html(records, open_limit=2)).by_class("details", "episode")[0]


def test_outcome_thresholds() -> None:
    rec = EpisodeRecord(episode_id="e", task_id="t", question="q", ground_truth="a")
    assert outcome_of(rec) == "unscored"
    assert outcome_of(rec.model_copy(update={"score": 1.0})) == "correct"
    assert outcome_of(rec.model_copy(update={"score": 0.6})) == "partial"
    assert outcome_of(rec.model_copy(update={"score": 0.6}), correct_threshold=0.5) == "correct"
    assert outcome_of(rec.model_copy(update={"score": 0.0})) == "incorrect"


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.text() | st.integers() | st.booleans() | st.none(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )
)
def test_json_for_script_round_trips_and_never_closes_the_script(value: Any) -> None:
    text = json_for_script(value)
    assert json.loads(text) == value
    assert "<" not in text and ">" not in text and "&" not in text


def test_cli_from_a_real_recorded_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    traj = tmp_path / "traj.jsonl"
    kwargs = lookup_env_kwargs()
    kwargs["tools"][0].table["item 1"] = "<script>alert('result')</script>"
    env = RecordTrajectory(AgentFlowEnv(**kwargs), traj)
    for index, answer in ((1, "wrong"), (2, "code-2")):
        env.reset(options={"task_index": index})
        env.step(lookup_action(f"item {index}"))
        env.step(finish_action(answer))
    env.close()
    out = tmp_path / "sub" / "report.html"
    assert main([str(traj), "-o", str(out), "--title", "run"]) == 0
    assert str(out) in capsys.readouterr().out
    page = Page(out.read_text(encoding="utf-8"))
    assert [e["data-outcome"] for e in page.by_class("details", "episode")] == [
        "incorrect",
        "correct",
    ]
    assert "<script>alert('result')</script>" in "".join(page.text) and len(page.scripts) == 2
    assert main([str(traj), str(traj), "-o", str(out), "--max-episodes", "3"]) == 0
    both = Page(out.read_text())
    assert len(both.by_class("details", "episode")) == 3
    assert "AgentFlow trajectories: traj.jsonl and 1 more" in "".join(
        both.text
    )  # the title names both files


def test_cli_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "r.html")]) == 2
    assert "no such trajectory file" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    write_jsonl(hostile_records()[:1], bad)
    with open(bad, "a", encoding="utf-8") as fh:
        fh.write("{not json}\n")
    assert main([str(bad), "-o", str(tmp_path / "r.html")]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    # an output that cannot be written is refused before anything is read
    assert main([str(tmp_path / "missing.jsonl"), "-o", str(bad / "r.html")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    with pytest.raises(ValueError):
        render_html([], max_chars=10)
    with pytest.raises(ValueError):
        write_report([], tmp_path / "r.html")


def training_records() -> list[EpisodeRecord]:
    """Five records as the trainer writes them: (step, group) = (1,0) (1,1) (2,0) (2,1) (2,1)."""
    records = hostile_records()[:4] + [
        EpisodeRecord(
            episode_id="plain",
            task_id="p",
            question="no tools here",
            ground_truth="a",
            answer="a",
            score=1.0,
            terminated=True,
        )
    ]
    for record, step, group in zip(records, (1, 1, 2, 2, 2), (0, 1, 0, 1, 1), strict=True):
        record.metadata.update(step=step, group=group, rank=0)
    return records


def test_training_records_get_step_and_group_filters() -> None:
    records = training_records()
    page = Page(render_html(records))
    episodes = page.by_class("details", "episode")
    assert [(e["data-step"], e["data-group"]) for e in episodes] == [
        ("1", "0"),
        ("1", "1"),
        ("2", "0"),
        ("2", "1"),
        ("2", "1"),
    ]
    selects = [a["id"] for t, a in page.tags if t == "select"]
    assert selects == ["f-outcome", "f-step", "f-group"]
    options = [a["value"] for t, a in page.tags if t == "option"]
    assert options[5:] == ["all", "1", "2", "all", "0", "1"]
    text = "".join(page.text)
    assert "2 (3)" in text and "step 2 · group 1 · rank 0 · plain" in text
    # Evaluation records (no integer step or group) get no such filters.
    records[0].metadata.update(step="1", group=True)
    plain = Page(render_html(records[:1]))
    assert [a["id"] for t, a in plain.tags if t == "select"] == ["f-outcome"]
    assert "data-step" not in plain.by_class("details", "episode")[0]


def test_a_training_run_directory_and_a_step_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = training_records()
    run = tmp_path / "run"
    # Rank 0 played groups 0 (and the rank-1 file groups 1): the report interleaves them by group.
    write_jsonl([r for r in records if r.metadata["group"] == 0], run / "trajectories.jsonl")
    write_jsonl([r for r in records if r.metadata["group"] == 1], run / "trajectories-rank1.jsonl")
    (run / "trajectories-rank1.jsonl.tmp").write_text("not a trajectory file")
    out = tmp_path / "r.html"
    assert main([str(run), "-o", str(out)]) == 0
    page = Page(out.read_text(encoding="utf-8"))
    episodes = page.by_class("details", "episode")
    steps_groups = [(e["data-step"], e["data-group"]) for e in episodes]
    assert steps_groups == [("1", "0"), ("1", "1"), ("2", "0"), ("2", "1"), ("2", "1")]
    assert "trajectories-rank1.jsonl" in "".join(page.text), "multi-file records name their file"
    assert main([str(run), "-o", str(out), "--steps", "2-"]) == 0
    assert len(Page(out.read_text()).by_class("details", "episode")) == 3
    assert main([str(run), "-o", str(out), "--steps", "1"]) == 0
    assert len(Page(out.read_text()).by_class("details", "episode")) == 2
    capsys.readouterr()
    assert main([str(run), "-o", str(out), "--steps", "3-1"]) == 2
    assert "before the first" in capsys.readouterr().err
    assert main([str(tmp_path / "r.html"), "-o", str(out), "--steps", "x"]) == 2
    assert "steps must be N, A-B or A-" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "-o", str(out)]) == 2
    assert "no trajectories.jsonl" in capsys.readouterr().err
    assert parse_steps(" 4 - 9 ") == (4, 9) and parse_steps("7-") == (7, None)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_filters_run_in_a_real_headless_browser(tmp_path: Path) -> None:
    records = training_records()
    report = write_report([_write(tmp_path, records)], tmp_path / "report.html")

    def shown(fragment: str, path: Path = report) -> list[str]:
        return browser_dom(path, fragment).shown_episodes()

    everything = browser_dom(report)
    assert ("html", {"lang": "en", "data-ready": "1"}) in everything.tags, "the page script ran"
    assert everything.shown_episodes() == [f"ep-{i}" for i in range(5)]
    assert len(everything.scripts) == 2, "no script was injected into the live DOM"
    correct = browser_dom(report, "#outcome=correct")
    assert correct.shown_episodes() == ["ep-1", "ep-3", "ep-4"]
    assert "Showing 3 of 5 episodes" in "".join(correct.text)
    assert shown("#outcome=correct&tool=none") == ["ep-4"]
    assert shown("#tool=Search_Tool") == ["ep-1", "ep-3"]
    assert shown("#q=alert(3)") == ["ep-2"]
    assert shown("#step=2") == ["ep-2", "ep-3", "ep-4"]
    assert shown("#group=1") == ["ep-1", "ep-3", "ep-4"]
    assert shown("#step=2&group=1&tool=Search_Tool") == ["ep-3"]
    assert shown("#step=9&group=x") == [f"ep-{i}" for i in range(5)], "unknown values: ignored"
    many = write_report(
        [_write(tmp_path, records * 8)], tmp_path / "many.html"
    )  # 40: start collapsed
    opened = browser_dom(many, "#outcome=incorrect&open=1")
    episodes = opened.by_class("details", "episode")
    assert len(episodes) == 40 and all(("open" in e) == ("hidden" not in e) for e in episodes)
    assert sum("open" in e for e in episodes) == 16
    assert browser_dom(many, "#step=1&group=0").shown_episodes() == [f"ep-{i}" for i in range(8)]


def _write(tmp_path: Path, records: list[EpisodeRecord]) -> Path:
    path = tmp_path / "traj.jsonl"
    write_jsonl(records, path)
    return path


def test_an_errored_episode_is_shown_as_unscored_with_its_failure(tmp_path: Path) -> None:
    from agentflow_env.infra import InfraError

    record = EpisodeRecord(
        episode_id="e",
        task_id="t",
        question="q",
        ground_truth="a",
        truncated=True,
        infra_error=InfraError(kind="engine_timeout", source="executor", message="timed out"),
        turns=[TurnRecord(turn=1, action="p", reward=None, error="executor engine failed")],
    )
    traj, out = tmp_path / "t.jsonl", tmp_path / "r.html"
    write_jsonl([record], traj)
    assert main([str(traj), "-o", str(out)]) == 0
    page = Page(out.read_text())
    assert [e["data-outcome"] for e in page.by_class("details", "episode")] == ["unscored"]
    text = "".join(page.text)
    assert "engine_timeout in executor: timed out" in text and "reward none" in text
