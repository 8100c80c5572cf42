"""ServiceAccount tokens: JWTs shaped and checked as kube-apiserver's are.

The claims are kube's (``iss``, ``sub``, ``aud``, ``exp``, ``iat``, ``nbf``, ``jti`` and
the private ``kubernetes.io`` claim naming the namespace, the ServiceAccount and the pod
a token is bound to). They are signed HS256 with a key the stand-in makes at start: the
environment has no JWT or RSA library, and no client verifies a token's signature
itself (they ask the server, by TokenReview), so a symmetric key changes nothing a
client sees. A real server signs RS256 with its service-account key.

Checking follows ``pkg/serviceaccount`` (jwt.go, claims.go) in kubernetes/kubernetes:
the audience must meet the requested ones, the token must not be expired, and the
ServiceAccount and the bound pod must still exist with the uids the token names, so a
deleted pod's token is dead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Obj = dict[str, Any]
#: ``(plural, namespace, name)`` to the stored object, or None.
Lookup = Callable[[str, str, str], Obj | None]

ISSUER = "https://kubernetes.default.svc.cluster.local"
#: The API server's own audiences (``--api-audiences`` defaults to the issuer).
API_AUDIENCES = (ISSUER,)
MIN_EXPIRATION_SECONDS = 600
DEFAULT_EXPIRATION_SECONDS = 3600
MAX_EXPIRATION_SECONDS = 2**32
#: go-jose's allowance for clock skew, which kube also grants deleted objects.
_LEEWAY = 60.0
SA_PREFIX = "system:serviceaccount:"
AUTHENTICATED = "system:authenticated"
POD_NAME_KEY = "authentication.kubernetes.io/pod-name"
POD_UID_KEY = "authentication.kubernetes.io/pod-uid"
CREDENTIAL_ID_KEY = "authentication.kubernetes.io/credential-id"


@dataclass(frozen=True)
class User:
    """Who a request is from, as ``user.Info`` says it."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = field(default_factory=dict)

    def info(self) -> Obj:
        """The ``UserInfo`` of TokenReview and SelfSubjectReview answers."""
        out: Obj = {"username": self.name}
        if self.uid:
            out["uid"] = self.uid
        if self.groups:
            out["groups"] = list(self.groups)
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra.items()}
        return out


class TokenError(Exception):
    """A token of ours that does not authenticate; the message is kube's."""


def service_account_user(namespace: str, name: str) -> str:
    return f"{SA_PREFIX}{namespace}:{name}"


def service_account_groups(namespace: str) -> tuple[str, ...]:
    return ("system:serviceaccounts", f"system:serviceaccounts:{namespace}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, signing_input: str) -> str:
    return _b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


def key_id(key: bytes) -> str:
    """A stable id of the signing key, for the JWT header's ``kid``."""
    return _b64(hashlib.sha256(b"kid:" + key).digest()[:16])


def encode(key: bytes, claims: Obj) -> str:
    """A compact HS256 JWS of ``claims``."""
    header = _b64(json.dumps({"alg": "HS256", "kid": key_id(key)}).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{header}.{payload}.{_sign(key, f'{header}.{payload}')}"


def claims_of(token: str) -> Obj | None:
    """The unverified claims of a JWT issued by us, or None for any other token."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(_unb64(parts[1]))
    except ValueError:
        return None
    if not isinstance(claims, dict) or claims.get("iss") != ISSUER:
        return None
    return claims


def claims(
    sa: Obj,
    audiences: Sequence[str],
    seconds: int,
    pod: Obj | None = None,
    now: float | None = None,
) -> Obj:
    """The claims kube puts in a ServiceAccount token (``serviceaccount.Claims``)."""
    issued = int(time.time() if now is None else now)
    meta = sa["metadata"]
    private: Obj = {
        "namespace": meta["namespace"],
        "serviceaccount": {"name": meta["name"], "uid": meta["uid"]},
    }
    if pod is not None:
        private["pod"] = {"name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}
    return {
        "aud": list(audiences),
        "exp": issued + seconds,
        "iat": issued,
        "iss": ISSUER,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": private,
        "nbf": issued,
        "sub": service_account_user(meta["namespace"], meta["name"]),
    }


def mint(
    key: bytes,
    sa: Obj,
    audiences: Sequence[str] = API_AUDIENCES,
    seconds: int = DEFAULT_EXPIRATION_SECONDS,
    pod: Obj | None = None,
    now: float | None = None,
) -> tuple[str, int]:
    """A signed token for ServiceAccount ``sa`` (bound to ``pod`` when given) and its
    expiry (seconds since the epoch). This is what TokenRequest and a projected volume's
    token are made of."""
    payload = claims(sa, audiences, seconds, pod, now)
    return encode(key, payload), int(payload["exp"])


def verify(
    key: bytes,
    token: str,
    lookup: Lookup,
    audiences: Sequence[str] = API_AUDIENCES,
    now: float | None = None,
) -> tuple[User, list[str]] | None:
    """The user of one of our tokens and the audiences it is good for here.

    None when the token is not one of ours (another authenticator may know it); raises
    :class:`TokenError` with kube's wording when it is ours but not (or no longer) good.
    """
    payload = claims_of(token)
    if payload is None:
        return None
    header, body, signature = token.split(".")
    if not hmac.compare_digest(_sign(key, f"{header}.{body}"), signature):
        raise TokenError("go-jose/go-jose: error in cryptographic primitive")
    token_audiences = payload.get("aud") or list(API_AUDIENCES)
    if isinstance(token_audiences, str):
        token_audiences = [token_audiences]
    wanted = list(audiences) or list(API_AUDIENCES)
    meeting = [a for a in wanted if a in token_audiences]
    if not meeting:
        raise TokenError(
            f"token audiences {_go_quoted(token_audiences)} is invalid for the target "
            f"audiences {_go_quoted(wanted)}"
        )
    moment = time.time() if now is None else now
    if moment > float(payload.get("exp", 0)) + _LEEWAY:
        raise TokenError("service account token has expired")
    if moment < float(payload.get("nbf", 0)) - _LEEWAY:
        raise TokenError("service account token is not valid yet")
    private = payload.get("kubernetes.io") or {}
    namespace = private.get("namespace", "")
    sa_ref = private.get("serviceaccount") or {}
    sa = lookup("serviceaccounts", namespace, sa_ref.get("name", ""))
    if sa is None:
        raise TokenError(f'serviceaccounts "{sa_ref.get("name", "")}" not found')
    if _deleted_before(sa, moment - _LEEWAY):
        raise TokenError(f"service account {namespace}/{sa_ref.get('name')} has been deleted")
    if sa["metadata"]["uid"] != sa_ref.get("uid"):
        raise TokenError(
            f"service account UID ({sa['metadata']['uid']}) does not match claim "
            f"({sa_ref.get('uid')})"
        )
    extra: dict[str, list[str]] = {}
    if (pod_ref := private.get("pod")) is not None:
        pod = lookup("pods", namespace, pod_ref.get("name", ""))
        if pod is None or _deleted_before(pod, moment - _LEEWAY):
            raise TokenError("service account token has been invalidated")
        if pod["metadata"]["uid"] != pod_ref.get("uid"):
            raise TokenError(
                f"pod UID ({pod['metadata']['uid']}) does not match service account pod "
                f"ref claim ({pod_ref.get('uid')})"
            )
        extra[POD_NAME_KEY] = [pod_ref["name"]]
        extra[POD_UID_KEY] = [pod_ref["uid"]]
    if jti := payload.get("jti"):
        extra[CREDENTIAL_ID_KEY] = [f"JTI={jti}"]
    user = User(
        service_account_user(namespace, sa_ref["name"]),
        sa_ref["uid"],
        (*service_account_groups(namespace), AUTHENTICATED),
        extra,
    )
    return user, meeting


def _deleted_before(obj: Obj, moment: float) -> bool:
    """Whether ``obj`` was marked deleted before ``moment``: a pod still terminating keeps
    a working token for its grace period, as on a cluster."""
    stamp = obj["metadata"].get("deletionTimestamp")
    if not stamp:
        return False
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() < moment


def _go_quoted(items: Sequence[str]) -> str:
    """A string slice as Go's ``%q`` prints it: ``["a" "b"]``."""
    return "[" + " ".join(json.dumps(i) for i in items) + "]"
