"""What software a run used: package versions and the git commit of matprobe's source.

Recorded in run.json by the pipeline, printed by the report: the demo's numbers are
deterministic for one set of library versions (see constraints.txt), not across them.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("matprobe", "torch", "transformers", "peft", "numpy", "scipy", "scikit-learn", "h5py", "pandas")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None if it is not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def source_commit() -> dict[str, str | bool | None]:
    """The git commit of the checkout matprobe is imported from, if it is one.

    Only when matprobe's own files are tracked there (an installed wheel inside some other
    repository must not report that repository's commit). `modified` says whether tracked
    files of the package differ from the commit.
    """
    pkg = Path(__file__).resolve().parent
    if _git(["ls-files", "--error-unmatch", "__init__.py"], pkg) is None:
        return {"commit": None, "modified": None}
    commit = _git(["rev-parse", "HEAD"], pkg)
    status = _git(["status", "--porcelain", "--untracked-files=no", "--", "."], pkg)
    return {"commit": commit, "modified": bool(status) if status is not None else None}


def environment() -> dict:
    """Versions of the packages that decide the numbers, and the source commit."""
    from matprobe.numerics import numerics_summary

    return {"versions": package_versions(), "source": source_commit(), "numerics": numerics_summary()}
