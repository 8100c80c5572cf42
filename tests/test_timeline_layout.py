"""The run timeline's layout (durapod.api.timeline), a pure function of a run's records:
bars, waits, ticks and checkpoint labels, as tables. That labels never overlap is checked
here on the nominal track and, in a browser, by tests/test_pages.py."""

from __future__ import annotations

import itertools
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from durapod.api import timeline
from durapod.api.timeline import GAP_PX, TRACK_PX, MarkLabel
from durapod.store.pods import PodRecord
from durapod.store.runs import Run
from durapod.store.timeline import Mark

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RUN_ID = UUID(int=1)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(**values: Any) -> Run:
    base: dict[str, Any] = {f.name: None for f in fields(Run)}
    base.update(
        id=RUN_ID, namespace="default", name="r", task="t", payload={}, phase="Succeeded",
        version=1, attempt=1, resumes=0, pods=1, tags=[], queue="default", holds_slot=False,
        message="", transitioned_at=T0, created_at=at(0), finished_at=at(10),
    )  # fmt: skip
    base.update(values)
    return Run(**base)


def pod(idx: int, created: float, started: float | None, finished: float | None,
        outcome: str | None, attempt: int = 1, **values: Any) -> PodRecord:  # fmt: skip
    return PodRecord(
        run_id=RUN_ID, idx=idx, attempt=attempt, name=f"r-{idx}", machine="small-1x",
        created_at=at(created), in_cluster=True,
        started_at=at(started) if started is not None else None,
        finished_at=at(finished) if finished is not None else None, outcome=outcome,
        output=values.get("output"), error=values.get("error"), suspend=values.get("suspend"),
    )  # fmt: skip


def marks(*seconds: float) -> list[Mark]:
    return [Mark(f"step-{i}", i - 1, 2, at(s)) for i, s in enumerate(seconds, 1)]


BOOM = {"type": "ValueError", "message": "boom", "traceback": "Traceback ...\nValueError: boom"}


@pytest.mark.parametrize(
    ("record", "pods", "written", "expected"),
    [
        pytest.param(
            run(resumes=1, pods=2),
            [pod(1, 0, 1, 5, "Evicted"), pod(2, 5, 6, 10, "Succeeded")],
            marks(2, 3, 7),
            [
                ("Evicted", "first", "first attempt",
                 "pod 1 was disrupted (evicted, preempted or deleted): resumed in pod 2 from "
                 "checkpoint step-2, without spending an attempt"),
                ("Succeeded", "resume", "resumed after pod 1 was disrupted",
                 "pod 2 succeeded: the run is done"),
            ],
            id="an evicted pod, resumed from its last checkpoint",
        ),
        pytest.param(
            run(pods=2),
            [pod(1, 0, 1, 2, "Suspended", suspend={"until": "2026-03-01T12:00:05Z"}),
             pod(2, 5, 6, 10, "Succeeded")],
            [],
            [
                ("Suspended", "first", "first attempt",
                 "pod 1 exited to wait (sleeping until 2026-03-01T12:00:05Z); pod 2 carried on"),
                ("Succeeded", "resume", "woke from sleep", "pod 2 succeeded: the run is done"),
            ],
            id="a durable sleep, then the next pod",
        ),
        pytest.param(
            run(attempt=2, pods=2),
            [pod(1, 0, 1, 4, "TaskError", error=BOOM), pod(2, 6, 7, 10, "Succeeded", 2)],
            [],
            [
                ("TaskError", "first", "first attempt",
                 "pod 1 failed with a task error (ValueError: boom): retried as attempt 2 in "
                 "pod 2 on small-1x"),
                ("Succeeded", "retry", "retry after ValueError: boom",
                 "pod 2 succeeded: the run is done"),
            ],
            id="a task error, retried as the next attempt",
        ),
        pytest.param(
            run(phase="Failed", error={"type": "OOMKilled", "message": "pod r-1 was OOM-killed"}),
            [pod(1, 0, 1, 10, "OOMKilled")],
            marks(),
            [
                ("OOMKilled", "first", "first attempt",
                 "pod 1 was OOM-killed: the run ended Failed (OOMKilled: pod r-1 was OOM-killed)"),
            ],
            id="the last pod failed: the run's error says why",
        ),
        pytest.param(
            run(phase="Running", finished_at=None, message="attempt 1 is running in pod r-1"),
            [pod(1, 0, 1, None, None)],
            marks(2),
            [("Running", "first", "first attempt", "running now")],
            id="a pod running now",
        ),
        pytest.param(
            run(phase="Starting", finished_at=None),
            [pod(1, 0, None, None, None)],
            [],
            [("Starting", "first", "first attempt", "starting")],
            id="a pod not started yet",
        ),
        pytest.param(
            run(phase="Retrying", finished_at=None, message="attempt 1 failed; retrying in 5s"),
            [pod(1, 0, 1, 4, "Crashed")],
            [],
            [("Crashed", "first", "first attempt",
              "pod 1 crashed without reporting an outcome: attempt 1 failed; retrying in 5s")],
            id="backing off before a retry: the run's message says when",
        ),
    ],
)  # fmt: skip
def test_each_pod_is_a_bar_saying_how_it_began_and_what_happened_next(
    record: Run, pods: list[PodRecord], written: list[Mark], expected: list[tuple[str, ...]]
) -> None:
    layout = timeline.layout(record, pods, written, now=at(20))
    assert [(b.outcome, b.kind, b.why, b.then) for b in layout.bars] == expected


def test_bars_waits_and_marks_sit_where_their_times_are_on_the_axis() -> None:
    pods = [
        pod(1, 1, 2, 4, "Suspended", suspend={"child": "r-kid"}),
        pod(2, 8, 9, 10, "Succeeded"),
    ]
    layout = timeline.layout(run(pods=2), pods, marks(3, 9.5), now=at(99))
    first, second = layout.bars
    assert (first.pending, first.running) == (timeline.Span(10, 10), timeline.Span(20, 20))
    assert (second.pending, second.running) == (timeline.Span(80, 10), timeline.Span(90, 10))
    assert second.why == "resumed after child run r-kid ended"
    assert [(w.kind, w.span, w.label, w.child) for w in layout.waits] == [
        ("queued", timeline.Span(0, 10), "pending / queued", None),
        ("child", timeline.Span(40, 40), "waiting for child run r-kid", "r-kid"),
    ]
    assert [(c.left, c.pod, c.offset) for c in layout.checkpoints] == [
        (30, 1, "+3s"),
        (95, 2, "+9.5s"),
    ]
    assert (layout.start, layout.end, layout.duration, layout.ongoing) == (
        "2026-03-01 12:00:00.000 UTC", "2026-03-01 12:00:10.000 UTC", "10.0s", False
    )  # fmt: skip


def test_a_sleeping_run_waits_until_now_and_says_until_when() -> None:
    until = "2026-03-01T12:05:00Z"
    record = run(phase="Waiting", finished_at=None, resume_at=at(300))
    layout = timeline.layout(record, [pod(1, 0, 1, 2, "Suspended", suspend={"until": until})],
                             marks(1.5), now=at(4))  # fmt: skip
    assert layout.ongoing and layout.end == "2026-03-01 12:00:04.000 UTC (now)"
    [wait] = layout.waits
    assert (wait.kind, wait.label, wait.span) == (
        "sleeping",
        f"sleeping until {until}",
        timeline.Span(50, 50),
    )
    assert layout.bars[0].then == f"pod 1 exited to wait (sleeping until {until})"


@pytest.mark.parametrize(
    ("record", "now"),
    [
        pytest.param(run(phase="Queued", finished_at=None), at(5), id="a run with no pod yet"),
        pytest.param(run(phase="Failed", finished_at=at(0)), at(5), id="a run that took no time"),
    ],
)
def test_a_run_without_pods_is_one_wait_or_nothing(record: Run, now: datetime) -> None:
    layout = timeline.layout(record, [], [], now)
    assert layout.bars == [] and layout.labels == [] and layout.ticks
    assert [w.kind for w in layout.waits] == (["queued"] if record.finished_at is None else [])


@pytest.mark.parametrize(
    ("total", "labels"),
    [
        (0, ["+0s"]),
        (9.5, ["+0s", "+2s", "+4s", "+6s", "+8s"]),
        (0.25, ["+0s", "+50ms", "+100ms", "+150ms", "+200ms", "+250ms"]),
        (3600, ["+0s", "+10m", "+20m", "+30m", "+40m", "+50m", "+1h"]),
        (3 * 86400, ["+0s", "+12h", "+24h", "+36h", "+2d", "+2d12h", "+3d"]),
    ],
)
def test_ticks_come_at_a_round_interval_and_at_most_eight(total: float, labels: list[str]) -> None:
    ticks = timeline.ticks(total)
    assert [t.label for t in ticks] == labels
    assert ticks[0].left == 0 and all(t.left <= 100 for t in ticks)
    spacing = [b.left - a.left for a, b in itertools.pairwise(ticks)]
    assert all(gap >= 100 / timeline.MAX_TICKS for gap in spacing)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "+0s"), (0.25, "+250ms"), (1, "+1s"), (1.5, "+1.5s"), (20, "+20s"), (90, "+1m30s"),
     (120, "+2m"), (3660, "+1h1m"), (7200, "+2h"), (200_000, "+2d7h")],
)  # fmt: skip
def test_offsets_read_as_time_since_creation(seconds: float, text: str) -> None:
    assert timeline.offset(seconds) == text


def _check_labels(labels: list[MarkLabel], count: int) -> None:
    """No two labels overlap (with the gap), no leader crosses another label, and the
    labels' groups cover checkpoints 1..count in order, each once."""
    px = [(lb.left * TRACK_PX / 100, (lb.left + lb.width) * TRACK_PX / 100) for lb in labels]
    covered = [n for lb in labels for n in range(lb.first, lb.last + 1)]
    assert covered == list(range(1, count + 1))
    for i, a in enumerate(labels):
        assert a.left >= 0 and a.left + a.width <= 100.001
        for j, b in enumerate(labels):
            if i == j:
                continue
            if a.row == b.row:
                assert px[i][1] + GAP_PX <= px[j][0] + 0.01 or px[j][1] + GAP_PX <= px[i][0] + 0.01
            if b.row < a.row:  # a's leader passes b's row
                x = a.leader * TRACK_PX / 100
                assert not px[j][0] - GAP_PX < x < px[j][1] + GAP_PX, (a, b)


@pytest.mark.parametrize(
    ("lefts", "texts"),
    [
        pytest.param([10, 50, 90], ["step-1", "step-2", "step-3"], id="far apart: names"),
        pytest.param([50, 50, 50], ["step-1 … step-3 (3)"], id="at one moment: one label"),
        pytest.param(
            [i * 5 for i in range(20)], [f"#{i}" for i in range(1, 21)],
            id="20 evenly 36px apart: numbers over staggered rows",
        ),
        pytest.param(
            [i * 4 for i in range(25)], [*(f"#{i}-{i + 1}" for i in range(1, 25, 2)), "#25"],
            id="25 evenly 29px apart: numbered pairs",
        ),
        pytest.param(
            [10 + i * 0.2 for i in range(12)] + [60 + i * 4 for i in range(8)], None,
            id="a burst and a spread: grouped where crowded",
        ),
        pytest.param([i / 400 for i in range(2000)], None, id="2000 on one twentieth of the axis"),
        pytest.param([i / 20 for i in range(2000)], None, id="2000 over the whole axis"),
    ],
)  # fmt: skip
def test_checkpoint_labels_never_overlap_and_cover_every_checkpoint_once(
    lefts: list[float], texts: list[str] | None
) -> None:
    steps = [f"step-{i}" for i in range(1, len(lefts) + 1)]
    labels = timeline.mark_labels(lefts, steps)
    _check_labels(labels, len(lefts))
    if texts is not None:
        assert [lb.text for lb in labels] == texts
    assert max(lb.row for lb in labels) < timeline.LABEL_ROWS


def test_a_long_step_name_is_clipped_and_its_title_says_it_whole() -> None:
    name = "a-step-with-a-rather-long-descriptive-name"
    [label] = timeline.mark_labels([50], [name])
    assert label.text == name[: timeline.LABEL_CHARS - 1] + "…"
    assert label.title == f"checkpoint {name}"


@pytest.mark.parametrize(
    ("count", "title"),
    [(3, "3 checkpoints: step-1, step-2, step-3"), (40, "40 checkpoints: step-1 … step-40")],
)
def test_a_shared_label_names_its_checkpoints_in_its_title(count: int, title: str) -> None:
    [label] = timeline.mark_labels([50] * count, [f"step-{i}" for i in range(1, count + 1)])
    assert (label.first, label.last, label.title) == (1, count, title)
