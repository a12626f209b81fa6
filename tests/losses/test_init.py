"""The loss maths must import with torch alone: check every module's imports statically."""
import ast
import pathlib
import sys

import posttrain.losses as losses

ALLOWED_ROOTS = {"torch", "posttrain", "__future__"} | set(sys.stdlib_module_names)


def _imported_roots(path: pathlib.Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
            if node.module.startswith("posttrain") and not node.module.startswith("posttrain.losses"):
                roots.add(node.module)  # only posttrain.losses itself may be used
    return roots


def test_losses_import_only_torch_stdlib_and_themselves():
    folder = pathlib.Path(losses.__file__).parent
    files = sorted(folder.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "reduce.py", "sft.py", "preference.py",
                                        "policy.py", "advantages.py"}
    for f in files:
        assert _imported_roots(f) <= ALLOWED_ROOTS, f.name


def test_variant_tables_hold_the_contract_names():
    assert set(losses.SFT_LOSSES) == {"nll", "dft", "unlikelihood"}
    assert set(losses.DPO_LOSSES) == {"sigmoid", "ipo", "hinge", "robust", "simpo"}
    assert set(losses.AGGREGATIONS) == {"grpo", "dr_grpo", "dapo", "bnpo"}
    assert all(callable(f) for table in (losses.SFT_LOSSES, losses.AGGREGATIONS) for f in table.values())
    assert all(callable(f) and isinstance(ref, bool) for f, ref in losses.DPO_LOSSES.values())
    assert [n for n, (_, ref) in losses.DPO_LOSSES.items() if not ref] == ["simpo"]
