"""Known vulnerabilities that have a fixed release fail the build: the Python environment
(pip-audit, PyPI's advisory data) and the web app (npm audit, high and critical).

Both need their advisory service; where it cannot be reached the test says so and skips.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_python_packages_have_no_fixable_vulnerabilities() -> None:
    exe = Path(sys.executable).with_name("pip-audit")
    if not exe.exists():
        pytest.skip("pip-audit is not installed (make setup installs it)")
    done = subprocess.run(
        [str(exe), "--skip-editable", "--format", "json", "--progress-spinner", "off"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.skip(f"pip-audit could not reach its advisory service: {done.stderr[-500:]}")
    fixable = [
        f"{dep['name']} {dep['version']}: {vuln['id']} (fixed in {', '.join(vuln['fix_versions'])})"
        for dep in report["dependencies"]
        for vuln in dep.get("vulns") or []
        if vuln.get("fix_versions")
    ]
    assert report["dependencies"], "pip-audit audited nothing"
    assert not fixable, "upgrade these:\n" + "\n".join(fixable)


def test_web_app_packages_have_no_fixable_high_vulnerabilities() -> None:
    npm = shutil.which("npm")
    frontend = ROOT / "frontend"
    if npm is None or not (frontend / "package-lock.json").is_file():
        pytest.skip("npm or the web app's lock file is not here")
    done = subprocess.run(
        [npm, "audit", "--json", "--audit-level=high"],
        cwd=frontend,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        report = json.loads(done.stdout or "{}")
    except json.JSONDecodeError:
        report = {}
    if "vulnerabilities" not in report:
        # e.g. a registry mirror that does not serve the advisories endpoint (HTTP 405)
        reason = (report.get("message") or done.stderr or "no report").strip().splitlines()
        pytest.skip(f"npm's advisory endpoint is not reachable here: {reason[-1][:300]}")
    fixable = [
        f"{name} ({info['severity']})"
        for name, info in report["vulnerabilities"].items()
        if info.get("severity") in ("high", "critical") and info.get("fixAvailable")
    ]
    assert not fixable, "run `npm audit fix` for these:\n" + "\n".join(fixable)
