"""When the subprocess kubelet restarts a container, and how long it waits first.

A container that exits is started again when its pod's ``restartPolicy`` says so
(``Always``; ``OnFailure`` after a non-zero exit), unless the pod is being deleted,
evicted or past its deadline. The kubelet's crash back-off (client-go's
``flowcontrol.Backoff`` keyed by pod and container) decides when: the first restart at
once, then after ``base`` doubling up to ``cap`` (10s and 5m upstream), each wait
counted from the exit; a container whose last restart was more than twice ``cap`` ago
starts from the first again. While it waits the container is ``CrashLoopBackOff``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Why a container was stopped by the node, after which it does not start again.
FINAL = frozenset({"Deleted", "Evicted", "DeadlineExceeded"})


def should_restart(policy: str, code: int, killed_for: str | None) -> bool:
    """Whether a container that exited with ``code`` is started again."""
    if killed_for in FINAL:
        return False
    return policy == "Always" or (policy == "OnFailure" and code != 0)


@dataclass
class CrashBackOff:
    """The crash back-off of each container (by key); times are monotonic seconds."""

    base: float
    cap: float
    #: key → (the wait in force, when the container was last restarted).
    _entries: dict[str, tuple[float, float]] = field(default_factory=dict)

    def wait(self, key: str, finished: float) -> float:
        """The wait in force for a container that exited at ``finished`` (0: restart it
        at once); the wait counts from ``finished``."""
        entry = self._entries.get(key)
        if entry is None or finished - entry[1] > 2 * self.cap:
            return 0.0
        return entry[0]

    def restarted(self, key: str, finished: float, now: float) -> None:
        """Record a restart at ``now`` of a container that exited at ``finished``: the
        next wait doubles (or starts again from ``base``)."""
        entry = self._entries.get(key)
        if entry is None or finished - entry[1] > 2 * self.cap:
            delay = self.base
        else:
            delay = min(entry[0] * 2, self.cap)
        self._entries[key] = (delay, now)

    def forget(self, prefix: str) -> None:
        """Drop the entries whose key starts with ``prefix`` (a pod that is gone)."""
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]


def go_duration(seconds: float) -> str:
    """A duration as Go prints a time.Duration: ``200ms``, ``10s``, ``1m20s``, ``5m0s``."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{rest}s"
