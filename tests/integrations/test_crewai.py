"""CrewAI, from the main suite: its tests run in CrewAI's own virtualenv.

CrewAI pins mcp<2, openai<3 and pydantic<2.13, which the other frameworks' versions
rule out, so `hack/crewai-env` builds (once, cached outside the clone) a venv with
CrewAI and this clone of kubewrit, and tests/integrations_crewai runs there. This
test builds or reuses that venv and runs those tests; it fails, never skips, when
either step fails, so `pytest` (and hack/test) still covers CrewAI.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from integration_harness import REPO

BUILD_SECONDS = 900  # a cold venv downloads CrewAI's dependency tree
RUN_SECONDS = 300


@pytest.mark.timeout(BUILD_SECONDS + RUN_SECONDS + 60)
def test_crewai_suite_in_its_own_venv() -> None:
    build = subprocess.run(
        [str(REPO / "hack" / "crewai-env")], capture_output=True, text=True, timeout=BUILD_SECONDS
    )
    assert build.returncode == 0, f"hack/crewai-env failed:\n{build.stdout}\n{build.stderr}"
    venv = build.stdout.strip().splitlines()[-1]
    # -P: the repo's `operator/` must not shadow the standard library's from the cwd.
    run = subprocess.run(
        [
            os.path.join(venv, "bin", "python"),
            "-P",
            "-m",
            "pytest",
            "tests/integrations_crewai",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
    )
    assert run.returncode == 0, f"CrewAI tests failed:\n{run.stdout[-20000:]}\n{run.stderr}"
    assert " passed" in run.stdout and " skipped" not in run.stdout, run.stdout
