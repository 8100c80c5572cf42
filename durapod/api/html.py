"""Server-rendered HTML for the pages: one Jinja2 environment (autoescaped: every value a
run carries is escaped), the headers every page gets, and the bundled stylesheet.

The pages carry no script at all, so they read the same with JavaScript off, and the
Content-Security-Policy says so. Inline ``style`` attributes are allowed (only they
position the timeline's bars, from numbers the layout computed), style elements are not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from durapod import __version__

_HERE = Path(__file__).parent
#: Snapshots (payload, output) longer than this are cut, with a note; the JSON API has all.
SNAPSHOT_CHARS = 64 * 1024
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; style-src-attr 'unsafe-inline'; "
        "img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    # Pages show payloads and outputs: no shared cache keeps them.
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
STYLESHEET = "/assets/pages.css"
_CSS = (_HERE / "static" / "pages.css").read_bytes()


def pretty(value: Any) -> str:
    """JSON for people: indented, unicode as is, cut at ``SNAPSHOT_CHARS``."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
    if len(text) > SNAPSHOT_CHARS:
        return f"{text[:SNAPSHOT_CHARS]}\n… cut at {SNAPSHOT_CHARS} of {len(text)} characters"
    return text


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["pretty"] = pretty
_env.globals.update(stylesheet=STYLESHEET, version=__version__)


def render(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    body = _env.get_template(template).render(**context)
    return HTMLResponse(body, status, headers=HEADERS)


def error_page(status: int, title: str, detail: str, **context: Any) -> HTMLResponse:
    response = render("error.html", status, title=title, detail=detail, **context)
    if status == 503:
        response.headers["Retry-After"] = "2"
    return response


async def stylesheet(_: Request) -> Response:
    return Response(
        _CSS,
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )
