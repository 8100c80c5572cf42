"""The resume demo: five steps of about a second each.

Delete the pod mid-run (``kubectl delete pod``) and watch the run carry on in a new pod
from its last checkpoint: the steps already done are not run again.
"""

from __future__ import annotations

import os
import time
from typing import Any

from durapod import Context, task


def work(step: int) -> dict[str, Any]:
    time.sleep(1.0)
    pod = os.environ.get("HOSTNAME", "?")
    print(f"step {step} done in pod {pod}", flush=True)
    return {"step": step, "pod": pod}


@task("resume-demo")
async def resume_demo(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    done = [await ctx.step(f"step-{i}", work, i) for i in range(1, payload.get("steps", 5) + 1)]
    return {"steps": done, "attempt": ctx.attempt}
