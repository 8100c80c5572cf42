"""An example task shipped in its own image, built ``FROM`` durapod's (see ../README.md).

In the image this file is ``/app/tasks/orders.py``, so its TaskDefinition's entrypoint is
``tasks.orders:process_order``.
"""

from __future__ import annotations

from pydantic import BaseModel

from durapod import Context, Retry, task


class Order(BaseModel):
    id: str
    amount_cents: int


def charge(order: Order, idempotency_key: str) -> dict[str, object]:
    """Stands in for a payment provider's call (the key makes a repeated call harmless)."""
    return {"order": order.id, "charged": order.amount_cents, "key": idempotency_key}


@task("process-order", retry=Retry(max_attempts=5))
async def process_order(order: Order, ctx: Context) -> dict[str, object]:
    key = ctx.idempotency_key("charge")
    receipt = await ctx.step("charge", charge, order, idempotency_key=key)
    ctx.logger.info("charged order %s", order.id)
    return {"receipt": receipt}
