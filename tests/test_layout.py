"""The house: the library's imports follow the data flow, one floor down at a time.

    ground (config, errors, io, records, run_folder, device, precision, timing, png, pages)
      <- data <- model <- finished <- training <- explain <- compare <- predict <- reproduce

A module may import its own floor and the floors below it; nothing imports reproduce; what
uses a finished model (explain, compare, predict) stands on the finished floor, never on
training; and there is no import circle. Imports inside functions count too."""
from __future__ import annotations

import ast
import sys

from conftest import ROOT


PKG = ROOT / "ffcv_resnet"


FLOORS = ["ground", "data", "model", "finished", "training", "explain", "compare", "predict",
          "reproduce"]


def _module(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _floor(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "face"  # the package itself: its lazy names point anywhere
    return parts[1] if parts[1] in FLOORS else "ground"


def import_graph() -> dict[str, set[str]]:
    """{module: the ffcv_resnet modules it imports}, relative imports resolved."""
    modules = {_module(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("ffcv_resnet"):
                    continue
                for alias in node.names:  # `from . import loop`: a module, not a name
                    sub = f"{target}.{alias.name}"
                    deps.add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("ffcv_resnet")}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def test_imports_follow_the_flow_and_nothing_imports_reproduce():
    graph = import_graph()
    assert {"ffcv_resnet.data.convert", "ffcv_resnet.training.loop",
            "ffcv_resnet.explain.cams"} <= set(graph)  # the walk sees the subpackages
    against = []
    for module, deps in graph.items():
        if _floor(module) == "face":
            continue
        for dep in deps:
            mine, theirs = FLOORS.index(_floor(module)), FLOORS.index(_floor(dep))
            if theirs > mine or (theirs == FLOORS.index("reproduce") and mine != theirs):
                against.append(f"{module} imports {dep}")
    assert not against, "imports against the flow:\n" + "\n".join(sorted(against))


def test_what_uses_a_finished_model_never_imports_training():
    graph = import_graph()
    users = [m for m in graph if _floor(m) in ("explain", "compare", "predict")]
    assert len(users) > 15
    against = [f"{m} imports {d}" for m in users for d in graph[m] if _floor(d) == "training"]
    assert not against, "\n".join(sorted(against))


def test_the_library_has_no_import_circles():
    graph = import_graph()

    def visit(node, path):
        assert node not in path, f"import circle: {' -> '.join(path + [node])}"
        for nxt in graph.get(node, ()):
            visit(nxt, path + [node])

    for module in graph:
        visit(module, [])


def test_the_walk_sees_an_import_against_the_flow(tmp_path, monkeypatch):
    """The check itself can fail: a data module that imports training is reported."""
    import shutil
    fake = tmp_path / "ffcv_resnet"
    shutil.copytree(PKG, fake)
    (fake / "data" / "sneaky.py").write_text("from ..training import loop\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PKG", fake)
    graph = import_graph()
    assert "ffcv_resnet.training.loop" in graph["ffcv_resnet.data.sneaky"]
    try:
        test_imports_follow_the_flow_and_nothing_imports_reproduce()
    except AssertionError as e:
        assert "ffcv_resnet.data.sneaky imports ffcv_resnet.training.loop" in str(e)
    else:
        raise AssertionError("an import against the flow went unseen")


def test_every_relative_link_in_the_readme_and_docs_resolves():
    """The README links the reference pages in docs/; a moved or renamed page must not leave a
    dead link (an image included)."""
    import re
    from conftest import ROOT
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) > 5
    for page in pages:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)#\s]+)", text) + re.findall(r'src="([^"]+)"', text):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name}: dead link {target}"


def test_every_file_the_library_reads_beside_its_modules_is_installed_with_it():
    """A page template missing from setup.py's package_data works in a checkout and fails in an
    installed copy: every non-Python file inside the package is listed."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "id", "") == "setup")
    data = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "package_data"))
    listed = {f"{pkg.replace('.', '/')}/{name}" for pkg, names in data.items() for name in names}
    present = {str(p.relative_to(ROOT)) for p in PKG.rglob("*") if p.is_file()
               and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    assert present == listed, (present ^ listed)
