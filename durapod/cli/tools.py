"""Finding the binaries the CLI drives."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def kubectl_path() -> str:
    """The kubectl beside this Python (the pinned one `make setup` installs), else PATH's."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl not found: run `make setup`, which installs the pinned one")
    return found
