"""schemathesis against /openapi.json of a running API: no 5xx, and every response as
documented (status code, content type, body schema)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.helpers import BIN, REPO, DevProcess, running_dev


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    with running_dev("durapod-fuzz-") as process:
        process.kubectl("apply", "-f", str(REPO / "examples/hello/"))
        yield process


def test_schemathesis_finds_no_server_error_or_schema_violation(dev: DevProcess) -> None:
    env = dev.env()
    result = subprocess.run(
        [
            str(BIN / "st"),
            "run",
            f"{env['DURAPOD_API_URL']}/openapi.json",
            "--header",
            f"Authorization: Bearer {env['DURAPOD_TOKEN']}",
            "--checks",
            "not_a_server_error,status_code_conformance,"
            "response_schema_conformance,content_type_conformance",
            "--max-examples",
            "25",
            "--seed",
            "20261125",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert " passed" in result.stdout and "failure" not in result.stdout
