"""The house: a room per command over library floors in a fixed order, and no import circle.

Everything here reads the source (``ast``), so a wrong import fails the test before it can hide
behind an import inside a function.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "geopera"
TESTS = Path(__file__).resolve().parent
#: A room per command: its entry functions in ``run.py``, its tests in ``tests/<room>``.
COMMANDS = ("pretrain", "finetune", "predict", "publish", "evaluate", "embed", "archive", "view")
#: The floors, lowest first: a floor imports only the floors below it.
FLOORS = ("core", "data", "transforms", "losses", "metrics", "models", "viz")
#: The data floor's rooms, lowest first (``bands`` and ``roi`` sit at the floor's root).
DATA_ROOMS = ("sources", "sampling", "labelled")
#: What one stage may import from another: the fine-tuned model and the embeddings' similarity
#: search (``view`` answers clicks with it), never an orchestration.
SHARED_ACROSS_STAGES = {
    "geopera.finetune.checkpoint",
    "geopera.finetune.base",
    "geopera.finetune.registry",
    "geopera.embed.similar",
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
#: The benchmarks' modules: scripts (``bench_*``, ``gpu_check``, ``gpu_bundle``) over shared ones.
BENCHMARKS = sorted((PACKAGE.parent / "benchmarks").rglob("*.py"))
#: Everything the size rules cover.
SIZED = [*MODULES.values(), *BENCHMARKS]


def _imports(path: Path) -> set[str]:
    """Every geopera module or name imported anywhere in a file (inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("geopera.")}


def _room(module: str, depth: int = 1) -> str:
    parts = module.split(".")
    return parts[depth] if len(parts) > depth else ""


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_room_with_its_tests(command: str) -> None:
    assert (PACKAGE / command / "run.py").is_file(), command
    assert (TESTS / command).is_dir(), command


def test_old_packages_are_gone() -> None:
    for old in ("training", "tasks", "inference", "hub"):
        assert not (PACKAGE / old).exists(), old
    for old in ("archive", "stac", "sampling", "labelled", "datasets", "fetch", "chips"):
        assert not (PACKAGE / "data" / f"{old}.py").exists(), f"data/{old}.py"


def test_the_package_is_rooms_floors_and_the_cli() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == {*COMMANDS, *FLOORS, "cli"}


@pytest.mark.parametrize("floor", FLOORS)
def test_a_floor_imports_only_the_floors_below_it(floor: str) -> None:
    below = set(FLOORS[: FLOORS.index(floor) + 1])
    for path in _modules(floor):
        bad = {m for m in _imports(path) if _room(m) not in below}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


@pytest.mark.parametrize("room", DATA_ROOMS)
def test_the_data_rooms_are_ordered(room: str) -> None:
    allowed = {"", *DATA_ROOMS[: DATA_ROOMS.index(room) + 1]}
    if room == "labelled":
        allowed = {"", "labelled"}  # labelled data never reads archives or the sampler
    for path in _modules(f"data/{room}"):
        bad = {
            m
            for m in _imports(path)
            if _room(m) == "data" and _room(m, 2) in DATA_ROOMS and _room(m, 2) not in allowed
        }
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


@pytest.mark.parametrize("command", COMMANDS)
def test_no_stage_imports_another_stages_orchestration(command: str) -> None:
    for path in _modules(command):
        for module in _imports(path):
            other = _room(module)
            if other in COMMANDS and other != command:
                allowed = any(
                    module == shared or module.startswith(shared + ".")
                    for shared in SHARED_ACROSS_STAGES
                )
                assert allowed, f"{path.relative_to(PACKAGE)} imports {module}"
            assert other != "cli", f"{path.relative_to(PACKAGE)} imports {module}"


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle, if there is any (depth-first search)."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle() -> None:
    edges = {m: {i for i in _imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}
    assert _cycle(edges) is None, " -> ".join(_cycle(edges) or [])


def test_the_circle_finder_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_module_over_400_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in SIZED
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_over_80_lines() -> None:
    long = {}
    for path in SIZED:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE.parent)}:{node.name}"] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_benchmark_scripts_share_modules_not_each_other() -> None:
    """A script imports :mod:`benchmarks.common` or :mod:`benchmarks.gpu`, never another script."""
    scripts = {f"benchmarks.{p.stem}" for p in BENCHMARKS if p.parent.name == "benchmarks"}
    scripts.discard("benchmarks.__init__")
    bad = {}
    for path in BENCHMARKS:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                names = {a.name for a in node.names}
            else:
                continue
            if names & scripts:
                bad[str(path.relative_to(PACKAGE.parent))] = sorted(names & scripts)
    assert not bad, f"benchmark scripts importing other scripts: {bad}"


def test_no_string_comparison_on_a_task_kind_outside_the_registry() -> None:
    """What differs between tasks lives in the task classes and their registry records."""
    from geopera.finetune.registry import TASKS

    bad = []
    for path in MODULES.values():
        if path.name == "registry.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                if any(isinstance(o, ast.Constant) and o.value in TASKS for o in operands):
                    bad.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
            elif isinstance(node, ast.Dict) and any(
                isinstance(k, ast.Constant) and k.value in TASKS for k in node.keys
            ):
                bad.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not bad, f"task kinds compared or keyed outside the registry: {bad}"
