"""Package discovery for the design card's layout.

The top folders `platform/`, `trainers/`, `datasets/` are imported as
`vidistill.platform`, `vidistill.trainers`, `vidistill.datasets`. They carry no
`__init__.py` of their own, so a repository-root `sys.path` entry never shadows
Python's standard `platform` module (see ARCHITECTURE.md). Their sub-packages are
found here by walking the folders, so adding one needs no edit to this file.
All metadata lives in pyproject.toml.
"""
from pathlib import Path

from setuptools import setup

AREAS = ("platform", "trainers", "datasets")
ROOT = Path(__file__).parent


def area_packages(area: str) -> list[str]:
    folder = ROOT / area
    subpackages = sorted(
        ".".join(init.parent.relative_to(folder).parts)
        for init in folder.rglob("__init__.py")
    )
    return [f"vidistill.{area}"] + [f"vidistill.{area}.{sub}" for sub in subpackages]


setup(
    packages=[pkg for area in AREAS for pkg in area_packages(area)],
    package_dir={f"vidistill.{area}": area for area in AREAS},
)
