"""`operator/` must never shadow the standard library, and both code roots must import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_repository_root_on_sys_path_does_not_shadow_stdlib_operator() -> None:
    # -S: no site, so nothing imports `operator` before the repository root is on the path,
    # exactly as `python -m pytest` / `python -m pip` behave in a fresh virtualenv.
    probe = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); import collections, operator; "
        "assert operator.itemgetter and operator.__file__.endswith('operator.py'), operator"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", probe], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr


def test_both_code_roots_import_under_the_kubewrit_namespace() -> None:
    import kubewrit.operator
    import kubewrit.webhook

    assert Path(kubewrit.webhook.__file__).parent == REPO / "webhook"
    assert Path(kubewrit.operator.__file__).parent == REPO / "operator"
    assert kubewrit.operator.Config is not None


def test_the_wheel_holds_both_code_roots_under_kubewrit(tmp_path: Path) -> None:
    import zipfile

    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            "-q",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("kubewrit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (
        "__init__.py",
        "integrations.py",
        "cli.py",
        "webhook/__init__.py",
        "webhook/kube/records.py",
        "webhook/policy/compiler.py",
        "webhook/cli/__init__.py",
        "webhook/integrations/langchain.py",
        "webhook/console/routes.py",
        "webhook/console/templates/base.html",  # the console's templates and vendored htmx
        "webhook/console/static/htmx-2.0.11.min.js",
        "operator/__init__.py",
        "operator/retention.py",
    ):
        assert f"kubewrit/{module}" in names, module
    assert not any(name.startswith(("operator/", "webhook/")) for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "kubewrit = kubewrit.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA")))
    core = [
        line.split(":", 1)[1].strip()
        for line in metadata.decode().splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert not [d for d in core if d.split(">")[0].split("[")[0] in SERVER_SIDE], core


SERVER_SIDE = ("fastapi", "uvicorn", "kopf", "kubernetes", "cel-python", "prometheus-client")


def test_governing_a_tool_imports_no_server_or_operator_code() -> None:
    """The agent side (`import kubewrit`, a Governor, writ checks, an adapter) stays light."""
    probe = (
        "import sys, kubewrit\n"
        "from kubewrit.integrations import langchain\n"
        "g = kubewrit.Governor('http://127.0.0.1:9', token='t')\n"
        "heavy = [m for m in ('fastapi', 'uvicorn', 'kopf', 'kubernetes', 'celpy', "
        "'prometheus_client', 'kubewrit.webhook.server', 'kubewrit.operator', "
        "'kubewrit.webhook.policy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert callable(kubewrit.verify_writ) and kubewrit.Decision.PERMIT == 'PERMIT'\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_old_import_paths_still_work() -> None:
    from kubewrit.webhook.client import Governor as old
    from kubewrit.webhook.integrations import langchain as old_adapter

    import kubewrit
    from kubewrit.integrations import langchain

    assert kubewrit.Governor is old and langchain is old_adapter


def test_every_adapter_imports_by_its_documented_path() -> None:
    """`from kubewrit.integrations.<framework> import ...`, as README and docs spell it."""
    import kubewrit.integrations as adapters

    for name in adapters.ADAPTERS:
        probe = (
            f"import kubewrit.integrations.{name} as a, kubewrit.webhook.integrations.{name} as b\n"
            "assert a is b, (a, b)\n"
        )
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        missing_framework = (
            "No module named" in result.stderr
            and "kubewrit" not in (result.stderr.strip().splitlines() or [""])[-1]
        )
        assert result.returncode == 0 or missing_framework, f"{name}: {result.stderr[-400:]}"
    from kubewrit.integrations.langchain import wrap_tools

    assert callable(wrap_tools)


def test_the_langchain_extra_runs_the_documented_example() -> None:
    """`pip install 'kubewrit[server,langchain]'` installs everything the walkthrough agent imports."""
    import ast
    from importlib import metadata

    example = REPO / "examples" / "agents" / "support_agent.py"
    imported = {
        (node.module or "").split(".")[0]
        for node in ast.walk(ast.parse(example.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level == 0
    } | {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(example.read_text()))
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    third_party = {
        dist.lower()
        for module in imported - set(sys.stdlib_module_names) - {"kubewrit", "__future__"}
        for dist in metadata.packages_distributions()[module]
    }
    installed: set[str] = set()
    for requirement in metadata.requires("kubewrit") or []:
        name, _, marker = requirement.partition(";")
        extra = marker.split("extra ==")[-1].strip(" \"'") if "extra ==" in marker else ""
        if extra in ("", "server", "langchain"):
            installed.add(name.split("[")[0].split(">")[0].split("=")[0].strip().lower())
    assert third_party <= installed, third_party - installed
