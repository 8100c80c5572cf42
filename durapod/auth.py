"""How a run's pod proves which run it is: no secret in its spec, only a projected
ServiceAccount token the kubelet writes into the pod (audience ``durapod``, bound to the
pod, short-lived and rotated). The API checks it with a TokenReview, which names the pod;
the pod's record names its run. A deleted pod's token is refused by the API server.

Kept free of imports: the runner (in every task image) reads these names too.
"""

from __future__ import annotations

#: The audience of a pod's token: a token for the Kubernetes API is no use here, and
#: this one is no use against the Kubernetes API.
AUDIENCE = "durapod"
TOKEN_VOLUME = "durapod-token"
TOKEN_DIR = "/var/run/secrets/durapod.io"
TOKEN_FILE = f"{TOKEN_DIR}/token"
#: The kubelet renews the token once 80 % of this has passed.
TOKEN_SECONDS = 3600
#: Where a TokenReview names the pod a bound token was made for.
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"
