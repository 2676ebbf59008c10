"""The design card's layout: one distribution, three areas, Python's own `platform` intact."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AREAS = ("platform", "trainers", "datasets")


def run_python(code, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env, timeout=120)


def test_stdlib_platform_still_works_at_the_repository_root():
    result = run_python("import platform; print(platform.system())", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {"Linux", "Darwin", "Windows"}


def test_torch_imports_at_the_repository_root():
    # torch imports `platform`; a shadowing folder would break it here first.
    result = run_python("import torch, vidistill.trainers.models; print('ok')", cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_vidistill_areas_import_from_another_directory(tmp_path):
    code = "import vidistill.platform.cli.main, vidistill.trainers.models; print(vidistill.platform.__path__[0])"
    result = run_python(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == ROOT / "platform"


@pytest.mark.parametrize("area", AREAS)
def test_top_folders_have_no_init_file(area):
    assert not (ROOT / area / "__init__.py").exists()


def _imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


@pytest.mark.parametrize("area,forbidden", [("datasets", ("trainers", "platform")), ("trainers", ("platform",))])
def test_dependencies_point_from_platform_to_trainers_to_datasets(area, forbidden):
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / area).rglob("*.py")
        for module in _imported_modules(path)
        if any(module == f"vidistill.{f}" or module.startswith(f"vidistill.{f}.") for f in forbidden)
    ]
    assert offenders == []


def test_the_queue_store_knows_rows_not_job_kinds():
    # Kinds validate and size a job before it is written (platform/submission.py); the store
    # must not reach back into them, or every new kind becomes a store change.
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / "platform" / "queue").rglob("*.py")
        for module in _imported_modules(path)
        if module.startswith(("vidistill.platform.kinds", "vidistill.platform.submission"))
    ]
    assert offenders == []


def test_code_imports_areas_through_the_vidistill_namespace():
    bare = [
        f"{path.relative_to(ROOT)} imports {module}"
        for area in AREAS
        for path in (ROOT / area).rglob("*.py")
        for module in _imported_modules(path)
        if module.split(".")[0] in ("trainers", "datasets")
    ]
    assert bare == []


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```bash")[1:]]
    test_command = blocks[1]  # the README opens with: main job, then tests
    assert "pytest" in test_command
    assert test_command in ci
