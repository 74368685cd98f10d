"""The package's shape: which folder may import which, no private names across folders, old import paths that still
work, modules of about 300 lines, and one convention for the arguments every part shares."""

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import labkit

PACKAGE = Path(labkit.__file__).parent
FILES = sorted(PACKAGE.rglob("*.py"))
UPPER = ("labkit.viz", "labkit.lessons")  # what students see and the chapters: nothing below imports them


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def folder(module: str) -> str:
    """labkit.comm.shm.mailbox → labkit.comm; labkit.cost → labkit.cost (a top-level module is its own folder)."""
    return ".".join(module.split(".")[:2])


def imports(path: Path):
    """(imported module, names) for every import in the file, also those inside functions."""
    here = module_name(path)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = here.split(".")[: len(here.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join([*pkg, *([base] if base else [])])
            yield base, [alias.name for alias in node.names]


def resolved(module: str, names: list[str]) -> list[str]:
    """The labkit modules an import reaches: ``from labkit import memory`` reaches labkit.parallel.memory."""
    out = [module]
    for name in names:
        if module == "labkit" and name in labkit.MOVED:
            out.append(labkit.MOVED[name])
        elif module.startswith("labkit") and hasattr(importlib.import_module(module), "__path__"):
            if importlib.util.find_spec(f"{module}.{name}") is not None:  # a module of that package
                out.append(f"{module}.{name}")
    return [m for m in out if m.startswith("labkit")]


def test_nothing_outside_viz_and_lessons_imports_from_them():
    found = []
    for path in FILES:
        here = module_name(path)
        if here.startswith(UPPER):
            continue
        for module, names in imports(path):
            for target in resolved(module, names):
                if target.startswith(UPPER):
                    found.append(f"{here} imports {target}")
    assert not found, found


def test_viz_never_imports_the_lessons():
    found = []
    for path in FILES:
        here = module_name(path)
        if here.startswith("labkit.viz"):
            found += [f"{here} imports {t}" for m, n in imports(path) for t in resolved(m, n) if "lessons" in t]
    assert not found, found


def test_no_private_name_is_imported_across_folders():
    found = []
    for path in FILES:
        here = module_name(path)
        for module, names in imports(path):
            if not module.startswith("labkit"):
                continue
            for name in names:
                if name.startswith("_") and folder(module) != folder(here):
                    found.append(f"{here}: from {module} import {name}")
    assert not found, found


def test_no_module_is_much_over_300_lines():
    sizes = {module_name(p): len(p.read_text(encoding="utf-8").splitlines()) for p in FILES}
    assert {m: n for m, n in sizes.items() if n > 320} == {}


# The import paths notebooks, tests and checks outside this repository use, and where each module lives now.
OLD_PATHS = {
    "dataparallel": "labkit.parallel.data",
    "tensor_parallel": "labkit.parallel.tensor",
    "pipeline": "labkit.parallel.pipeline",
    "serving": "labkit.parallel.serving",
    "memory": "labkit.parallel.memory",
    "llm": "labkit.parallel.llm",
    "widgets": "labkit.viz.widgets",
    "plots": "labkit.viz.plots",
    "steps": "labkit.viz.steps",
    "article": "labkit.lessons.article",
    "background": "labkit.lessons.background",
    "concepts": "labkit.lessons.concepts",
    "practice": "labkit.lessons.practice",
    "faq": "labkit.lessons.faq",
    "claims": "labkit.lessons.claims",
    "check": "labkit.lessons.check",
    "teach": "labkit.lessons.teach",
    "exercises": "labkit.lessons.exercises",
}


def test_every_moved_module_is_listed_and_its_old_path_gives_the_same_module():
    assert labkit.MOVED == OLD_PATHS
    for old, new in OLD_PATHS.items():
        real = importlib.import_module(new)
        assert getattr(labkit, old) is real
        assert importlib.import_module(f"labkit.{old}") is real
        assert real.__spec__.name == new  # its own spec: pickling and reloading find the real module
    from labkit.exercises import ch01  # a module below a moved package loads once, under both names

    assert ch01 is importlib.import_module("labkit.lessons.exercises.ch01")


def test_the_public_api_of_the_design_is_where_it_was():
    from labkit import collectives, comm, compress, cost, data, memory, models, train, widgets

    for module, names in {
        comm: ("run", "from_mpi", "CommError", "Message", "Run", "Comm"),
        collectives: ("allreduce", "broadcast", "reduce", "reduce_scatter", "allgather", "ALGORITHMS"),
        cost: ("Link", "allreduce_time", "fit_link", "busbw", "preset", "ALGORITHMS"),
        train: ("train", "TrainConfig"),
        compress: ("gradients", "weights"),
        memory: ("estimate", "model_states"),
        data: ("load",),
        models: ("article_mlp",),
        widgets: ("cost_explorer", "step_through", "pipeline_explorer", "memory_calculator", "compression_explorer"),
    }.items():
        assert [n for n in names if not hasattr(module, n)] == [], module.__name__
    assert collectives.ALGORITHMS == cost.ALGORITHMS and type(collectives.ALGORITHMS) is tuple
    assert collectives.simple_ring_allreduce.__module__ == "labkit.collectives.simple"


def public_functions():
    """Every public function and method of labkit's modules that do not import TensorFlow or ipywidgets."""
    for info in pkgutil.walk_packages([str(PACKAGE)], "labkit."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != info.name:
                continue
            if inspect.isfunction(obj):
                yield f"{info.name}.{name}", obj
            elif inspect.isclass(obj):
                for attr, fn in vars(obj).items():
                    if inspect.isfunction(fn) and not attr.startswith("_"):
                        yield f"{info.name}.{name}.{attr}", fn


FUNCTIONS = dict(public_functions())
ORDER = ("algorithm", "nbytes", "p", "link")


def test_there_are_public_functions_to_check():
    assert len(FUNCTIONS) > 300 and "labkit.cost.allreduce_time" in FUNCTIONS


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_one_argument_order_and_one_name_for_the_number_of_ranks(name):
    params = list(inspect.signature(FUNCTIONS[name]).parameters.values())
    names = [q.name for q in params]
    positional = [q.name for q in params if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD)]
    shared = [n for n in positional if n in ORDER]  # keyword-only arguments have no order to keep
    assert shared == sorted(shared, key=ORDER.index), f"{name}{tuple(names)}: the order is {ORDER}"
    for q in params:
        if q.name in ("world_size", "n_ranks", "num_ranks", "nranks"):
            # only as another name for p, keyword-only, beside p itself (comm.run; TrainConfig's InitVar)
            assert q.name == "world_size" and q.kind is q.KEYWORD_ONLY and "p" in names, name


def test_a_transport_outside_those_a_function_takes_is_named_with_the_ones_it_takes():
    from labkit import comm, measure, train

    with pytest.raises(ValueError, match=r"comm.run takes \('sim', 'shm', 'mpi'\)"):
        comm.run(lambda c: None, 2, transport="gloo")
    with pytest.raises(ValueError, match=r"measure does not run on transport='sim': use one of \('shm', 'mpi'\)"):
        measure.measure(2, transport="sim")
    with pytest.raises(ValueError, match=r"train does not run on transport='shm': use one of \('sim', 'mpi'\)"):
        train.TrainConfig(transport="shm")


def test_every_file_of_the_kit_that_the_notebooks_and_readmes_name_exists():
    import re

    root = PACKAGE.parent
    texts = [
        *(root / "notebooks").glob("*.ipynb"),
        root / "README.md",
        PACKAGE / "README.md",
        root / "benchmarks" / "README.md",
    ]
    named = {m for path in texts for m in re.findall(r"labkit/[\w/]*\w(?:\.\w+)?", path.read_text(encoding="utf-8"))}
    named = {n for n in named if "chNN" not in n}  # a pattern for every chapter, not a file
    assert named and [n for n in sorted(named) if not (root / n).exists()] == []
