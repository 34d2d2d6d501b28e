"""The house: one package per command over library floors, and no stage runs another's code."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "geopera"
COMMANDS = ("pretrain", "finetune", "predict", "publish", "evaluate", "embed")
FLOORS = ("core", "data", "transforms", "models", "losses", "metrics", "viz")
#: What one stage may import from another: the fine-tuned model, never an orchestration.
SHARED_ACROSS_STAGES = {"geopera.finetune.checkpoint", "geopera.finetune.base"}


def _imports(path: Path) -> set[str]:
    """Every module imported anywhere in a file (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("geopera.")}


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def test_old_packages_are_gone_and_the_commands_have_houses() -> None:
    for old in ("training", "tasks", "inference", "hub"):
        assert not (PACKAGE / old).exists(), old
    for command in ("pretrain", "finetune", "predict", "publish", "evaluate", "embed"):
        assert (PACKAGE / command / "run.py").is_file(), command
        assert (PACKAGE.parent / "tests" / command).is_dir(), command


@pytest.mark.parametrize("floor", FLOORS)
def test_floors_import_no_command(floor: str) -> None:
    for path in _modules(floor):
        bad = {m for m in _imports(path) if _package_of(m) in (*COMMANDS, "cli")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


@pytest.mark.parametrize("command", [c for c in COMMANDS if (PACKAGE / c).is_dir()])
def test_no_stage_imports_another_stages_orchestration(command: str) -> None:
    for path in _modules(command):
        for module in _imports(path):
            other = _package_of(module)
            if other in COMMANDS and other != command:
                allowed = any(
                    module == shared or module.startswith(shared + ".")
                    for shared in SHARED_ACROSS_STAGES
                )
                assert allowed, f"{path.relative_to(PACKAGE)} imports {module}"
