"""Signing in to the pages. A browser cannot send a bearer header by itself, so a form
takes the same token (a static API token or a Kubernetes ServiceAccount token) and keeps it
in an HttpOnly, SameSite=Lax cookie (Lax, not Strict: a link to a run page from an alert or
a chat opens it signed in; the pages are read-only GETs); every page request checks its token
exactly as the JSON API checks the bearer header (``Authenticator.principal``), so a
revoked token stops working at once (a TokenReview answer is cached for a minute).

Only the pages read the cookie: the JSON API stays bearer-only, so a cookie never
authorises a state-changing call. A page asked for without a valid token redirects here.

SameSite does not guard the forms themselves: a browser stores a cookie set by the answer to
another site's form posted here (a top-level navigation), which would sign it in with that
site's token (login CSRF). So both forms answer 403 unless the browser says they were posted
from this site (``Sec-Fetch-Site``, or else ``Origin``).
"""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from durapod.api import html
from durapod.api.auth import Authenticator
from durapod.api.problems import Problem

COOKIE = "durapod_token"
SIGNIN = "/signin"
HOME = "/runs"
#: A ServiceAccount token is about 1 KiB; a cookie holds 4 KiB.
MAX_FORM_BYTES = 8 * 1024
router = APIRouter(include_in_schema=False)


def _token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get(COOKIE, "").strip()


async def principal(request: Request) -> str | None:
    """Who asks, by bearer header or sign-in cookie; None without a valid token. A token
    that cannot be checked now (no API server to ask) raises the 503 ``Problem``."""
    token = _token(request)
    return await _check(request, token) if token else None


async def _check(request: Request, token: str) -> str | None:
    authenticator: Authenticator = request.app.state.authenticator
    try:
        return await authenticator.principal(token)
    except Problem as problem:
        if problem.status == 401:
            return None
        raise


def local_path(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return HOME
    return target


def from_this_site(request: Request) -> bool:
    """Whether a form was posted from this site's own page, as the browser tells: its
    ``Sec-Fetch-Site``, or (older browsers) its ``Origin`` against our ``Host``. A client
    that sends neither is no browser posting another site's form."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")  # "none": the user's own action
    origin = request.headers.get("origin")
    if origin is None:
        return True
    netloc = urlsplit(origin).netloc.lower()  # none for "null", an opaque origin
    return bool(netloc) and netloc == request.headers.get("host", "").lower()


def over_https(request: Request) -> bool:
    """Whether the browser reached us over HTTPS: directly, or through a proxy that ended
    TLS and says so (a client forging that header only makes its own cookie Secure)."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def _cross_site() -> Response:
    detail = "this form was posted from another site; sign in from this site's own page"
    return html.error_page(403, "Forbidden", detail, user=None)


def to_signin(request: Request) -> Response:
    """The answer to a page asked for without a valid token: 303 to the sign-in form."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{SIGNIN}?next={quote(target, safe='')}", status_code=303)


@router.get(SIGNIN)
async def form(request: Request, next: str | None = None) -> Response:
    return html.render("signin.html", next=local_path(next), error=None, user=None)


@router.post(SIGNIN)
async def sign_in(request: Request) -> Response:
    if not from_this_site(request):
        return _cross_site()
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return html.error_page(413, "Content Too Large", "the form is too large", user=None)
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
    token = (fields.get("token") or [""])[0].strip()
    target = local_path((fields.get("next") or [HOME])[0])
    user = None
    if token:
        try:
            user = await _check(request, token)
        except Problem as problem:
            return html.error_page(problem.status, problem.title, problem.detail, user=None)
    if user is None:
        error = "That token was not accepted." if token else "Enter a token."
        return html.render("signin.html", 401, next=target, error=error, user=None)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=over_https(request),
        path="/",
    )
    return response


@router.post("/signout")
async def sign_out(request: Request) -> Response:
    if not from_this_site(request):
        return _cross_site()
    response = RedirectResponse(SIGNIN, status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")
    return response
