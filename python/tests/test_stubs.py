"""The type stubs, the package's exports and the native module agree, and
importing with another torch fails with both versions named."""

import ast
import inspect
import os
import re
import subprocess
import sys

import physcon
from physcon import _physcon

STUB = os.path.join(os.path.dirname(physcon.__file__), "_physcon.pyi")
ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def stub_tree():
    with open(STUB, encoding="utf-8") as f:
        return ast.parse(f.read())


def public(names):
    return {n for n in names if not n.startswith("_")}


def stub_exports(tree):
    """Top-level classes, functions and constants of the stub (not its type aliases)."""
    aliases = {"EnergyFn", "Checks", "Flow", "BatchLike"}
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets)
    return public(names) - aliases


def test_stub_names_are_the_module_exports():
    exports = stub_exports(stub_tree())
    assert exports == public(dir(_physcon)) - {"TORCH_VERSION"}
    assert set(physcon.__all__) == exports | {"TORCH_VERSION"}


def runtime_parameters(obj):
    """Parameter names of a native callable, from pyo3's ``__text_signature__``."""
    text = obj.__text_signature__
    assert text, obj
    return [p for p in inspect.signature(obj).parameters if p not in ("self", "$self", "cls")]


def stub_parameters(fn):
    args = fn.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return [n for n in names if n not in ("self", "cls")]


def test_stub_signatures_match_the_module():
    checked = 0
    for node in stub_tree().body:
        if isinstance(node, ast.FunctionDef):
            assert stub_parameters(node) == runtime_parameters(getattr(_physcon, node.name)), node.name
            checked += 1
        elif isinstance(node, ast.ClassDef):
            cls = getattr(_physcon, node.name)
            for item in node.body:
                if not isinstance(item, ast.FunctionDef) or item.name.startswith("__") and item.name not in (
                    "__init__",
                    "__call__",
                ):
                    continue
                if any(isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list):
                    assert isinstance(inspect.getattr_static(cls, item.name), type(_physcon.Batch.batch)), item.name
                    continue
                # pyo3 gives slots such as `__call__` no signature; a loss's call
                # takes what its `per_molecule` takes.
                name = "per_molecule" if item.name == "__call__" else item.name
                target = cls if name == "__init__" else getattr(cls, name)
                assert stub_parameters(item) == runtime_parameters(target), f"{node.name}.{item.name}"
                checked += 1
    assert checked >= 25


def test_torch_version_pin_matches_the_build_script():
    with open(os.path.join(ROOT, "scripts", "with-libtorch.sh"), encoding="utf-8") as f:
        pinned = re.search(r"^TORCH_VERSION=(\S+)$", f.read(), re.M).group(1)
    assert physcon.TORCH_VERSION == pinned
    with open(os.path.join(ROOT, "python", "pyproject.toml"), encoding="utf-8") as f:
        assert f'"torch=={pinned}"' in f.read()


def test_another_torch_version_fails_at_import_naming_both():
    # A stand-in for another torch release, reporting a different version.
    code = (
        "import sys, torch; torch.__version__ = '2.99.0+cpu'; "
        "import physcon"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 1
    assert "ImportError: physcon was built for torch 2.11.0 but torch 2.99.0+cpu is installed" in run.stderr
    assert "Segmentation" not in run.stderr
