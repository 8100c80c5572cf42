"""Machine presets: the CPU and memory a run's pod gets (requests equal limits)."""

from __future__ import annotations

from durapod.resources.models import Machine

PRESETS: dict[Machine, tuple[str, str]] = {
    Machine.MICRO: ("250m", "256Mi"),
    Machine.SMALL_1X: ("500m", "512Mi"),
    Machine.SMALL_2X: ("1", "1Gi"),
    Machine.MEDIUM_1X: ("1", "2Gi"),
    Machine.MEDIUM_2X: ("2", "4Gi"),
    Machine.LARGE_1X: ("4", "8Gi"),
    Machine.LARGE_2X: ("8", "16Gi"),
}
