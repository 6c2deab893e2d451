"""The three modeling files read side by side: the same classes, with the same methods, in the same order.

This is the project's answer to the reference library's "Copied from" checks. Framework hooks are
compared by role (``forward``/``call``/``__call__`` -> forward; ``__init__``/``setup`` -> init), a
Flax model class is compared together with its linen ``...Module`` twin (the twin holds the forward
pass), and the shared base ``RoFormerPreTrainedModel`` is left out: its body is each framework's own
API (``nn.Module``, ``keras.Model``, the reference Flax model object). What a framework has and the
others cannot is listed in ``FRAMEWORK_ONLY``, with the reason.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src"
BACKENDS = ("torch", "tf", "flax")
HOOKS = {"forward": "forward", "call": "forward", "__call__": "forward", "__init__": "init", "setup": "init"}
#: (backend, class) -> methods only that framework has
FRAMEWORK_ONLY = {
    ("flax", "RoFormerForCausalLM"): {"init_cache"},  # fixed-size cache buffers, so one jitted step serves all
}


def _classes(backend: str) -> dict[str, list[str]]:
    tree = ast.parse((ROOT / f"roformer_{backend}" / "modeling.py").read_text(encoding="utf-8"))
    found: dict[str, list[str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
            continue
        methods = [HOOKS.get(n.name, n.name) for n in node.body
                   if isinstance(n, ast.FunctionDef) and (n.name in HOOKS or not n.name.startswith("_"))]
        methods = [m for m in methods if m not in FRAMEWORK_ONLY.get((backend, node.name), ())]
        twin = node.name.endswith("Module") and node.name[:-len("Module")]
        if twin and twin != "RoFormer":  # RoFormerForMaskedLMModule -> merged into RoFormerForMaskedLM
            found.setdefault(twin, [])
            found[twin] = [m for m in methods if m != "init"] + found[twin]
            continue
        if node.name == "RoFormerModule":
            found.setdefault("RoFormerModel", [])
            found["RoFormerModel"] = [m for m in methods if m != "init"] + found["RoFormerModel"]
            continue
        found.setdefault(node.name, [])
        found[node.name] = found[node.name] + methods
    found.pop("RoFormerPreTrainedModel", None)
    return {name: sorted(set(methods), key=methods.index) for name, methods in found.items()}


@pytest.fixture(scope="module")
def classes():
    return {b: _classes(b) for b in BACKENDS}


def test_the_same_classes_in_the_same_order(classes):
    torch_order = list(classes["torch"])
    for backend in ("tf", "flax"):
        assert list(classes[backend]) == torch_order, backend


def test_the_same_methods_by_role(classes):
    problems = []
    for name, methods in classes["torch"].items():
        for backend in ("tf", "flax"):
            theirs = classes[backend].get(name)
            if theirs is not None and set(theirs) - {"init"} != set(methods) - {"init"}:
                problems.append(f"{name}: torch {methods}, {backend} {theirs}")
    assert not problems, "\n".join(problems)
