"""The packages' import graph keeps its layers (read from the source, function-level imports too).

    edge_ai/cli/   the command line: the top, may import everything
    tui/           -> runtime/, edge_ai core
    convert/       -> runtime/ (the llama.cpp adapter runtime/llamacpp, for quantize, imatrix, eval), edge_ai core
    runtime/       -> edge_ai core
    edge_ai/ core  -> nothing of the above

And llama-cpp-python is known to one package: outside runtime/llamacpp/ nothing imports `llama_cpp`
(its raw ctypes bindings included) or reads a private attribute of its objects (`llm._model`...),
so its next upgrade touches that package only.

A violation fails with the importing file and line, so the rule holds for the next engineer too.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge_ai", "runtime", "tui", "convert")
CLI = "edge_ai.cli"
ADAPTER = ROOT / "runtime" / "llamacpp"

# layer -> the layers it must not import
FORBIDDEN = {
    "core": ("runtime", "tui", "convert", "cli"),
    "runtime": ("tui", "convert", "cli"),
    "convert": ("tui", "cli"),
    "tui": ("convert", "cli"),
    "cli": (),
}


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to (None: not one of ours)."""
    top = module.split(".", 1)[0]
    if module == CLI or module.startswith(CLI + ".") or module == "edge_ai.__main__":
        return "cli"
    if top == "edge_ai":
        return "core"
    return top if top in PACKAGES else None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file; `from edge_ai import cli` counts as edge_ai.cli."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def violations() -> list[str]:
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            source_layer = layer_of(module_name(path))
            for line, target in imports(path):
                target_layer = layer_of(target)
                if target_layer in FORBIDDEN[source_layer]:
                    out.append(f"{path.relative_to(ROOT)}:{line}: {source_layer} imports {target} ({target_layer})")
    return out


def test_layers_import_only_downwards() -> None:
    assert violations() == []


def test_the_rule_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from tui.app import run_app\n    from edge_ai import cli\n")
    assert imports(bad) == [(2, "tui.app"), (2, "tui.app.run_app"), (3, "edge_ai"), (3, "edge_ai.cli")]
    assert [layer_of(m) for _, m in imports(bad)] == ["tui", "tui", "core", "cli"]


def llama_cpp_private_attributes() -> frozenset[str]:
    """The `self._name` attributes llama-cpp-python's classes set (Llama, LlamaModel, LlamaContext...)."""
    spec = importlib.util.find_spec("llama_cpp")  # its source, without loading libllama
    assert spec is not None and spec.origin is not None
    root = Path(spec.origin).parent
    return frozenset(node.attr for name in ("llama.py", "_internals.py")
                     for node in ast.walk(ast.parse((root / name).read_text(encoding="utf-8")))
                     if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                     and node.value.id == "self" and node.attr.startswith("_") and not node.attr.startswith("__"))


def llama_cpp_uses(path: Path, private: frozenset[str]) -> list[str]:
    """Where `path` imports llama_cpp or reads one of its private attributes off another object
    (`self._name` is the class's own attribute, `llm._model` is llama-cpp-python's)."""
    found = [f"{line}: imports {module}" for line, module in imports(path)
             if module.split(".", 1)[0] == "llama_cpp"]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if (isinstance(node, ast.Attribute) and node.attr in private
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
            found.append(f"{node.lineno}: reads {ast.unparse(node)}")
    return found


def test_only_the_adapter_knows_llama_cpp() -> None:
    private = llama_cpp_private_attributes()
    assert {"_model", "_ctx", "_batch"} <= private  # the scan reads what it should
    out = [f"{path.relative_to(ROOT)}:{use}"
           for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
           if ADAPTER not in path.parents for use in llama_cpp_uses(path, private)]
    assert out == []


def test_the_llama_cpp_rule_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f(llm):\n    import llama_cpp.llama_cpp as raw\n    from llama_cpp import Llama\n"
                   "    return llm._model.vocab, self._model\n")
    assert llama_cpp_uses(bad, llama_cpp_private_attributes()) == [
        "2: imports llama_cpp.llama_cpp", "3: imports llama_cpp", "3: imports llama_cpp.Llama",
        "4: reads llm._model"]
