"""The tree's boundaries, checked on the source: what the host may import from runners/."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The host imports the contract it shares with the runners, and the runners' folder (to mount it).
HOST_MAY_IMPORT = ("runners.contract",)
# orchestrator/inplace runs in the user's process, where it loads and serves variants as the runners do.
INPLACE_MAY_IMPORT = (*HOST_MAY_IMPORT, "runners.serving", "runners.harness.measure")


def runner_imports(path: Path) -> list[str]:
    """The runners.* modules a file imports (`from runners import X` as runners.X)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "runners"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "runners":
            found += ([f"runners.{alias.name}" for alias in node.names if alias.name != "RUNNERS_DIR"]
                      if node.module == "runners" else [node.module])
    return found


def test_the_host_imports_only_the_contract_from_runners():
    wrong = {}
    for path in sorted((ROOT / "orchestrator").rglob("*.py")):
        allowed = INPLACE_MAY_IMPORT if "inplace" in path.relative_to(ROOT).parts else HOST_MAY_IMPORT
        bad = [name for name in runner_imports(path) if not name.startswith(allowed)]
        if bad:
            wrong[str(path.relative_to(ROOT))] = bad
    assert wrong == {}


def test_the_contract_imports_nothing_else_of_runners():
    for path in sorted((ROOT / "runners" / "contract").glob("*.py")):
        assert all(name.startswith("runners.contract") for name in runner_imports(path)), path.name


@pytest.mark.parametrize("path", ["runners/serving/variant_loader.py", "runners/contract/structure.py"])
def test_what_a_triton_model_folder_carries_imports_nothing_else_of_nav_orch(path):
    """A Triton model folder carries copies of the loader and of structure.py beside model.py."""
    tree = ast.parse((ROOT / path).read_text())
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert {name for name in modules if name.split(".")[0] in ("runners", "orchestrator")} <= {
        "runners.contract.structure"}
