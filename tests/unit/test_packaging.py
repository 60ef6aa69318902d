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
    assert (
        "kubewrit = kubewrit.webhook.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    )
