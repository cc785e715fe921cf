"""The shape of the code: no import cycles among the project's modules (imports inside functions
count), the library never names the programs that call it, and no line is wider than 100
characters."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("mlp", "experiments")
LINE_LENGTH = 100


def module_imports(root=REPO):
    """{module: the project modules it imports anywhere in its file}."""
    files = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {other for other in found if other in files and other != name}
    return graph


def cycles(graph):
    """Every cycle a depth-first walk of `graph` meets, each as a list of modules."""
    found, state, stack = [], {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for other in sorted(graph[module]):
            if state.get(other) == "open":
                found.append(stack[stack.index(other):] + [other])
            elif other not in state:
                visit(other)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_no_import_cycles_among_the_projects_modules():
    assert cycles(module_imports()) == []


def test_the_cycle_finder_sees_a_cycle_through_a_function_level_import(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "mlp" / "a.py").write_text("from mlp import b\n")
    (tmp_path / "mlp" / "b.py").write_text("def f():\n    from mlp.a import x\n")
    assert cycles(module_imports(tmp_path)) == [["mlp.a", "mlp.b", "mlp.a"]]


def test_the_library_does_not_name_its_callers_programs():
    for path in (REPO / "mlp").rglob("*.py"):
        code = "\n".join(line for line in path.read_text().splitlines()
                         if not line.lstrip().startswith("#"))
        tree = ast.parse(code)
        strings = [node.value for node in ast.walk(tree)
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)]
        docstrings = {ast.get_docstring(node, clean=False) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))}
        named = [s for s in strings if "experiments." in s and s not in docstrings]
        assert named == [], path


def long_lines(root=REPO):
    """["path:line", ...] of the project's Python lines (tests too) wider than LINE_LENGTH."""
    return [f"{path.relative_to(root)}:{number}"
            for package in (*PACKAGES, "tests") for path in sorted((root / package).rglob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if len(line) > LINE_LENGTH]


def test_no_line_is_wider_than_100_characters():
    assert long_lines() == []
