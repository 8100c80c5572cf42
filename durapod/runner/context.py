"""What a task function receives beside its payload."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field


@dataclass
class Context:
    """The run a task function is executing for."""

    run_id: str
    name: str
    namespace: str
    attempt: int
    logger: logging.LoggerAdapter[logging.Logger] = field(init=False)

    def __post_init__(self) -> None:
        self.logger = logging.LoggerAdapter(
            logging.getLogger("durapod.task"),
            {"run_id": self.run_id, "attempt": self.attempt},
        )
