"""The run timeline's layout: a pure function from a run's records to positions on the
time axis (percentages) and labels, so the page's template only places what is decided
here, and the decisions are tested as tables.

Checkpoint labels are the crowded part. Their widths are estimated on the narrowest track
the page's CSS allows (``TRACK_PX``, in a monospace font of a known advance) and set as
the labels' widths, so what does not overlap here does not overlap in a browser either:
a wider track only spreads them out. Close checkpoints share one label (a cluster), and
labels are staggered over a few rows, each joined to its mark by a leader line that
crosses no other label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from durapod.durations import format_duration
from durapod.store.pods import PodRecord
from durapod.store.runs import Run
from durapod.store.timeline import Mark

#: The narrowest the time axis gets (``.track`` ``min-width`` in pages.css).
TRACK_PX = 720.0
#: A label character's width: 11px DejaVu Sans Mono advances 6.6px; rounded up.
CHAR_PX = 7.0
#: A label's padding and border (``.mark-label`` in pages.css: 4 + 1 px a side), and 2px
#: to spare for rounding.
LABEL_PAD_PX = 12.0
#: Room kept between two labels of a row, and between a leader line and a label.
GAP_PX = 6.0
#: Rows of checkpoint labels before close checkpoints are merged into one label.
LABEL_ROWS = 3
#: The longest step name a label shows whole.
LABEL_CHARS = 22
#: At most this many ticks on the time axis.
MAX_TICKS = 8
#: Nice tick intervals, in seconds.
_TICK_STEPS = (
    *(m / 1000 for m in (1, 2, 5, 10, 20, 50, 100, 200, 500)),
    *(1, 2, 5, 10, 15, 30),
    *(60 * m for m in (1, 2, 5, 10, 15, 30)),
    *(3600 * h for h in (1, 2, 3, 6, 12)),
    *(86400 * d for d in (1, 2, 7, 14, 30)),
)
#: How a pod that ended this way is described; the run goes on in another pod (or not).
_ENDINGS = {
    "Succeeded": "succeeded",
    "Suspended": "exited to wait",
    "TaskError": "failed with a task error",
    "Crashed": "crashed without reporting an outcome",
    "Evicted": "was disrupted (evicted, preempted or deleted)",
    "OOMKilled": "was OOM-killed",
    "TimedOut": "ran past the run's maxDuration",
    "Cancelled": "was stopped: the run was cancelled",
    "NotStarted": "never started (its startDeadline passed)",
}


@dataclass(frozen=True)
class Span:
    """A stretch of the time axis, in percent of its width."""

    left: float
    width: float


@dataclass(frozen=True)
class Tick:
    left: float
    label: str
    #: Which edge of the label sits on the tick: start (it reads rightwards) or end.
    anchor: str


@dataclass(frozen=True)
class Bar:
    """One pod of the run: a row of the timeline."""

    idx: int
    attempt: int
    pod: str
    machine: str
    #: How it ended (the pod record's outcome), or Running / Starting while it lives.
    outcome: str
    #: How it came to be: first, resume (same attempt) or retry (next attempt).
    kind: str
    #: Why it came to be, or what it is waiting for.
    why: str
    #: What happened when it ended: a sentence with the reason.
    then: str
    created: str
    started: str
    finished: str
    duration: str
    #: Created until started (scheduling, image pull, process start).
    pending: Span | None
    #: Started until it ended (or until now).
    running: Span | None
    error: dict[str, Any] | None
    #: The bar's own text (outcome and duration), shown in it when it fits.
    text: str
    fits: bool


@dataclass(frozen=True)
class Wait:
    """Time the run spent with no pod: in line, sleeping, waiting for a child, backing off."""

    span: Span
    kind: str
    label: str
    child: str | None
    since: str
    until: str
    duration: str
    #: Whether the label fits inside the span on the narrowest track.
    fits: bool


@dataclass(frozen=True)
class Checkpoint:
    number: int
    step: str
    seq: int
    size: str
    at: str
    offset: str
    left: float
    #: The pod whose lifetime the checkpoint was written in (None: between pods).
    pod: int | None
    child: str | None


@dataclass(frozen=True)
class MarkLabel:
    """A label for one checkpoint or a cluster of close ones."""

    text: str
    title: str
    left: float
    width: float
    row: int
    #: Where the leader line joins the axis (the cluster's middle).
    leader: float
    #: The cluster's extent on the axis (zero width for one checkpoint).
    bracket: Span
    first: int
    last: int


@dataclass(frozen=True)
class Layout:
    start: str
    end: str
    duration: str
    ongoing: bool
    ticks: list[Tick]
    bars: list[Bar]
    waits: list[Wait]
    checkpoints: list[Checkpoint]
    labels: list[MarkLabel]
    label_rows: int


def stamp(when: datetime | None) -> str:
    """A full UTC time for people, to the millisecond; an em dash for none."""
    if when is None:
        return "—"
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def clock(when: datetime | None) -> str:
    """The time of day in UTC, to the millisecond (the page says the date once)."""
    if when is None:
        return "—"
    return when.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]


def size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.1f} MiB"


def offset(seconds: float) -> str:
    """Time since the run's creation as an axis label: +0s, +250ms, +1.5s, +2m30s, +1h5m."""
    if seconds < 1 and seconds != 0:
        return f"+{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"+{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    if seconds < 3600:
        minutes, secs = divmod(round(seconds), 60)
        return f"+{minutes}m{secs}s" if secs else f"+{minutes}m"
    hours, minutes = divmod(round(seconds) // 60, 60)
    if hours < 48:
        return f"+{hours}h{minutes}m" if minutes else f"+{hours}h"
    days, hours = divmod(hours, 24)
    return f"+{days}d{hours}h" if hours else f"+{days}d"


def ticks(total: float) -> list[Tick]:
    """Ticks at a nice interval, at most ``MAX_TICKS``, labelled with the time since start."""
    if total <= 0:
        return [Tick(0.0, "+0s", "start")]
    step = next((s for s in _TICK_STEPS if total / s <= MAX_TICKS), None)
    if step is None:
        step = total / MAX_TICKS
    found = []
    for k in range(math.floor(total / step + 1e-9) + 1):
        left = min(100.0, 100.0 * k * step / total)
        anchor = "end" if left > 92 else "start"  # the label reads away from the edge
        found.append(Tick(round(left, 3), offset(k * step), anchor))
    return found


#: Wider than any label _text makes (at most two clipped names and a count).
_WIDEST_PX = TRACK_PX / 2


def _clip(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _px(text: str) -> float:
    return len(text) * CHAR_PX + LABEL_PAD_PX


@dataclass(frozen=True)
class _Placed:
    left: float
    right: float
    row: int
    leader: float


def _fits(placed: Sequence[_Placed], left: float, right: float, row: int, leader: float) -> bool:
    # Labels are placed left to right (leaders ascending) and none is wider than
    # _WIDEST_PX: a label whose leader is further left than that cannot be in the way.
    for p in reversed(placed):
        if p.leader + _WIDEST_PX < left - GAP_PX:
            break
        if p.row == row and left < p.right + GAP_PX and p.left < right + GAP_PX:
            return False  # two labels of a row overlap
        if p.row < row and p.left - GAP_PX <= leader <= p.right + GAP_PX:
            return False  # this leader would cross a label above it
        if p.row > row and left - GAP_PX <= p.leader <= right + GAP_PX:
            return False  # an earlier leader would cross this label
    return True


def _groups(xs: Sequence[float], span: float) -> list[list[int]]:
    """Indexes of ``xs`` (ascending) in runs that reach at most ``span`` past their first:
    evenly spaced marks make groups of a few each, not one long chain."""
    groups: list[list[int]] = []
    for i, x in enumerate(xs):
        if groups and x - xs[groups[-1][0]] <= span:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _text(steps: Sequence[str], group: list[int], named: bool) -> str:
    """A group's label: step names (``named``) or checkpoint numbers, as in the table."""
    first, last = group[0] + 1, group[-1] + 1
    if len(group) == 1:
        return _clip(steps[group[0]]) if named else f"#{first}"
    if named:
        return f"{_clip(steps[group[0]], 12)} … {_clip(steps[group[-1]], 12)} ({len(group)})"
    return f"#{first}-{last}"


def _place(
    xs: Sequence[float], steps: Sequence[str], groups: list[list[int]], named: bool
) -> list[tuple[_Placed, str]] | None:
    """Each group's label in the top row where it fits; None if one fits in none."""
    placed: list[_Placed] = []
    texts = []
    for group in groups:
        leader = (xs[group[0]] + xs[group[-1]]) / 2
        text = _text(steps, group, named)
        width = _px(text)
        left = min(max(leader - width / 2, 0.0), TRACK_PX - width)
        row = next(
            (r for r in range(LABEL_ROWS) if _fits(placed, left, left + width, r, leader)), None
        )
        if row is None:
            return None
        placed.append(_Placed(left, left + width, row, leader))
        texts.append(text)
    return list(zip(placed, texts, strict=True))


def _pct(px: float) -> float:
    return round(100.0 * px / TRACK_PX, 3)


def mark_labels(lefts: Sequence[float], steps: Sequence[str]) -> list[MarkLabel]:
    """Labels for checkpoints at ``lefts`` (percent, ascending): one per checkpoint where
    there is room, else one per group of close checkpoints (groups as narrow as will do;
    names before numbers); no two labels overlap, and no leader line crosses a label."""
    xs = [left * TRACK_PX / 100.0 for left in lefts]
    span = 0.0
    while True:
        groups = _groups(xs, span)
        for named in (True, False):
            if (found := _place(xs, steps, groups, named)) is not None:
                return [
                    _label(xs, steps, group, *f) for group, f in zip(groups, found, strict=True)
                ]
        span = max(span * 2, 8.0)  # at TRACK_PX, one group: its label always fits


def _title(names: list[str]) -> str:
    if len(names) == 1:
        return f"checkpoint {names[0]}"
    if len(names) <= 10:
        return f"{len(names)} checkpoints: {', '.join(names)}"
    return f"{len(names)} checkpoints: {names[0]} … {names[-1]}"


def _label(
    xs: Sequence[float], steps: Sequence[str], group: list[int], p: _Placed, text: str
) -> MarkLabel:
    lo, hi = xs[group[0]], xs[group[-1]]
    return MarkLabel(
        text=text,
        title=_title([steps[i] for i in group]),
        left=_pct(p.left),
        width=_pct(p.right - p.left),
        row=p.row,
        leader=_pct(p.leader),
        bracket=Span(_pct(lo), _pct(hi - lo)),
        first=group[0] + 1,
        last=group[-1] + 1,
    )


class _Axis:
    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.total = max((end - start).total_seconds(), 0.001)

    def at(self, when: datetime) -> float:
        return round(min(100.0, max(0.0, 100.0 * self.seconds(when) / self.total)), 3)

    def seconds(self, when: datetime) -> float:
        return (when - self.start).total_seconds()

    def span(self, since: datetime, until: datetime) -> Span:
        left = self.at(since)
        return Span(left, round(max(self.at(until) - left, 0.0), 3))


def _error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    kind = error.get("reason") or error.get("type") or "Error"
    return f"{kind}: {error.get('message', '')}".rstrip(": ")


def _last_step_before(marks: Sequence[Mark], when: datetime | None) -> str | None:
    done = [m for m in marks if when is None or m.created_at <= when]
    return done[-1].step if done else None


def _wait_label(pod: PodRecord) -> tuple[str, str, str | None]:
    """(kind, label, child) of the time after a pod that exited to wait."""
    suspend = pod.suspend or {}
    if suspend.get("child"):
        child = str(suspend["child"])
        return "child", f"waiting for child run {child}", child
    return "sleeping", f"sleeping until {suspend.get('until', '?')}", None


def _then(pod: PodRecord, nxt: PodRecord | None, run: Run, marks: Sequence[Mark]) -> str:
    """What happened when ``pod`` ended, and why the run went on as it did."""
    if pod.outcome is None:
        return "running now" if pod.started_at else "starting"
    ended = f"pod {pod.idx} {_ENDINGS.get(pod.outcome, pod.outcome)}"
    if pod.outcome == "Succeeded":
        return f"{ended}: the run is done"
    if pod.outcome == "Suspended":
        _, label, _ = _wait_label(pod)
        return f"{ended} ({label})" + (f"; pod {nxt.idx} carried on" if nxt else "")
    error = _error_text(pod.error)
    if error:
        ended = f"{ended} ({error})"
    if nxt is not None and nxt.attempt == pod.attempt:
        step = _last_step_before(marks, pod.finished_at)
        where = f"from checkpoint {step}" if step else "from the start (no checkpoint yet)"
        return f"{ended}: resumed in pod {nxt.idx} {where}, without spending an attempt"
    if nxt is not None:
        return f"{ended}: retried as attempt {nxt.attempt} in pod {nxt.idx} on {nxt.machine}"
    if run.finished_at is not None:
        why = _error_text(run.error)
        return f"{ended}: the run ended {run.phase}" + (f" ({why})" if why else "")
    return f"{ended}: {run.message}" if run.message else ended


def _why(prev: PodRecord | None, pod: PodRecord) -> tuple[str, str]:
    """(kind, reason) of a pod: the first, a resume of the same attempt or a retry."""
    if prev is None:
        return "first", "first attempt"
    if prev.outcome == "Suspended":
        _, _, child = _wait_label(prev)
        return "resume", f"resumed after child run {child} ended" if child else "woke from sleep"
    if pod.attempt == prev.attempt:
        ended = "was disrupted" if prev.outcome == "Evicted" else f"ended {prev.outcome}"
        return "resume", f"resumed after pod {prev.idx} {ended}"
    reason = _error_text(prev.error) or prev.outcome or "?"
    return "retry", f"retry after {reason}"


def _wait_after(prev: PodRecord) -> tuple[str, str, str | None]:
    if prev.outcome == "Suspended":
        return _wait_label(prev)
    if prev.outcome == "Evicted":
        return "resuming", "resuming from the last checkpoint", None
    return "backoff", f"retry backoff after {prev.outcome}", None


def _wait(
    axis: _Axis, since: datetime, until: datetime, kind: str, label: str, child: str | None
) -> Wait:
    span = axis.span(since, until)
    return Wait(
        span=span,
        kind=kind,
        label=label,
        child=child,
        since=clock(since),
        until=clock(until),
        duration=format_duration(until - since),
        fits=_fits_in(span, label),
    )


def _fits_in(span: Span, text: str) -> bool:
    return span.width * TRACK_PX / 100 >= _px(text)


def _waits(axis: _Axis, run: Run, pods: Sequence[PodRecord], end: datetime) -> list[Wait]:
    found = []
    if not pods:
        if run.finished_at is None or run.finished_at > run.created_at:
            found.append(_wait(axis, run.created_at, end, "queued", "pending / queued", None))
        return found
    if pods[0].created_at > run.created_at:
        found.append(
            _wait(axis, run.created_at, pods[0].created_at, "queued", "pending / queued", None)
        )
    for prev, nxt in zip(pods, [*pods[1:], None], strict=True):
        if prev.finished_at is None:
            continue
        until = nxt.created_at if nxt is not None else None
        if until is None and run.finished_at is None:
            until = end  # no pod now: the run waits still
        if until is None or until <= prev.finished_at:
            continue
        kind, label, child = _wait_after(prev)
        found.append(_wait(axis, prev.finished_at, until, kind, label, child))
    return found


def _bar(
    axis: _Axis,
    prev: PodRecord | None,
    pod: PodRecord,
    nxt: PodRecord | None,
    run: Run,
    marks: Sequence[Mark],
    end: datetime,
) -> Bar:
    ended = pod.finished_at or end
    started = pod.started_at
    kind, why = _why(prev, pod)
    outcome = pod.outcome or ("Running" if started else "Starting")
    pending = axis.span(pod.created_at, started or ended)
    running = axis.span(started, ended) if started else None
    duration = format_duration(ended - pod.created_at)
    text = f"{outcome} · {duration}"
    return Bar(
        idx=pod.idx,
        attempt=pod.attempt,
        pod=pod.name,
        machine=pod.machine,
        outcome=outcome,
        kind=kind,
        why=why,
        then=_then(pod, nxt, run, marks),
        created=clock(pod.created_at),
        started=clock(started),
        finished=clock(pod.finished_at),
        duration=duration,
        pending=pending,
        running=running,
        error=pod.error,
        text=text,
        fits=_fits_in(running or pending, text),
    )


def _pod_at(pods: Sequence[PodRecord], when: datetime) -> int | None:
    for pod in pods:
        if pod.created_at <= when and (pod.finished_at is None or when <= pod.finished_at):
            return pod.idx
    return None


def layout(
    run: Run,
    pods: Sequence[PodRecord],
    marks: Sequence[Mark],
    now: datetime,
    children: dict[str, str] | None = None,
) -> Layout:
    """The timeline of ``run``: from its creation to its end (or ``now``).

    ``children`` maps trigger steps to the child runs they started, so their marks link.
    """
    times = [run.created_at, *(t for p in pods for t in (p.created_at, p.finished_at) if t)]
    times += [m.created_at for m in marks]
    start = min(times)
    end = max([run.finished_at or now, *times])
    axis = _Axis(start, end)
    bars = [
        _bar(axis, prev, pod, nxt, run, marks, end)
        for prev, pod, nxt in zip([None, *pods], pods, [*pods[1:], None], strict=False)
    ]
    checkpoints = [
        Checkpoint(
            number=n,
            step=m.step,
            seq=m.seq,
            size=size(m.size),
            at=clock(m.created_at),
            offset=offset(axis.seconds(m.created_at)),
            left=axis.at(m.created_at),
            pod=_pod_at(pods, m.created_at),
            child=(children or {}).get(m.step),
        )
        for n, m in enumerate(sorted(marks, key=lambda m: (m.created_at, m.seq)), 1)
    ]
    labels = mark_labels([c.left for c in checkpoints], [c.step for c in checkpoints])
    return Layout(
        start=stamp(start),
        end=stamp(run.finished_at) if run.finished_at else f"{stamp(now)} (now)",
        duration=format_duration(end - start),
        ongoing=run.finished_at is None,
        ticks=ticks(axis.total),
        bars=bars,
        waits=_waits(axis, run, pods, end),
        checkpoints=checkpoints,
        labels=labels,
        label_rows=max((label.row + 1 for label in labels), default=0),
    )


def since(when: datetime, now: datetime) -> str:
    """How long ago, for the runs list: 4m5s ago."""
    return f"{format_duration(max(now - when, timedelta(0)))} ago"
