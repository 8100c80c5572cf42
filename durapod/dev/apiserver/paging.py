"""List pages and continue tokens, as an etcd-backed list pages.

The token is apiserver's own shape (base64url of ``{"v","rv","start"}``): the
resourceVersion of the first page and the key to go on from. Every page of one list shows
the collection as it was at that resourceVersion (the store keeps a snapshot for the
outstanding tokens); once the history has been compacted past it, the token is refused
with 410 Expired, carrying a token that goes on from the latest state instead.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from durapod.dev.apiserver import errors

Obj = dict[str, Any]
_VERSION = "meta.k8s.io/v1"
_BASE64URL = re.compile(r"[^A-Za-z0-9_-]")
#: storage/etcd3/errors.go: the message of an expired continue token that comes with a
#: token going on from the latest state.
INCONSISTENT = (
    "The provided continue parameter is too old to display a consistent list result. You "
    "can start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted "
    "between the time the first chunk was returned and now may show up in the list."
)


def encode_token(rv: int, start: str) -> str:
    data = json.dumps({"v": _VERSION, "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def _invalid(detail: str = "") -> errors.StatusError:
    reason = "continue key is not valid" + (f": {detail}" if detail else "")
    return errors.bad_request(f"invalid continue token: {reason}")


def decode_token(token: str) -> tuple[str, int]:
    """The start key and resourceVersion of a token (storage.DecodeContinue's checks);
    a resourceVersion of -1 means "go on from the latest state"."""
    if bad := _BASE64URL.search(token):
        raise _invalid(f"illegal base64 data at input byte {bad.start()}")
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        content = json.loads(data)
    except (binascii.Error, ValueError) as exc:
        raise _invalid(str(exc)) from exc
    if not isinstance(content, dict):
        raise _invalid("json: cannot unmarshal into Go value of type storage.continueToken")
    version, rv, start = content.get("v"), content.get("rv"), content.get("start")
    if version != _VERSION:
        raise _invalid(f"server does not recognize this encoded version {version or ''}")
    if not isinstance(rv, int) or isinstance(rv, bool) or rv == 0:
        raise _invalid("incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    if not isinstance(start, str) or not start:
        raise _invalid("encoded start key empty (version meta.k8s.io/v1)")
    key = start if start.startswith("/") else "/" + start
    if posixpath.normpath(key) != key:
        # A token may not climb out of its resource's keys.
        raise _invalid(start)
    return start.lstrip("/"), rv


class ContinueExpired(errors.StatusError):
    """410 Expired for a compacted continue token, with a token for the latest state."""

    def __init__(self, start: str) -> None:
        super().__init__(410, "Expired", INCONSISTENT)
        self.next_token = encode_token(-1, start)

    def body(self) -> dict[str, Any]:
        status = super().body()
        status["metadata"] = {"continue": self.next_token}
        return status


@dataclass(frozen=True)
class Page:
    items: list[Obj]
    continue_token: str
    #: How many more objects the next pages hold; None when selectors make it unknown.
    remaining: int | None


def cut(
    items: Sequence[tuple[str, Obj]],
    start: str,
    limit: int,
    keep: Callable[[Obj], bool],
    rv: int,
    count: bool,
) -> Page:
    """The page of ``items`` (sorted by key) from ``start`` holding at most ``limit`` kept
    objects (0: all); ``count`` says whether to report the remaining item count (upstream
    does only for lists without selectors)."""
    first = bisect.bisect_left(items, start, key=lambda pair: pair[0]) if start else 0
    page: list[Obj] = []
    last_key = ""
    for index in range(first, len(items)):
        key, obj = items[index]
        if not keep(obj):
            continue
        if limit and len(page) == limit:
            remaining = sum(1 for _, o in items[index:] if keep(o)) if count else None
            return Page(page, encode_token(rv, last_key + "\x00"), remaining)
        page.append(obj)
        last_key = key
    return Page(page, "", None)
