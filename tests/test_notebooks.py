"""Every notebook in notebooks/ runs top to bottom with small parameters.

Each notebook's first code cell is tagged ``parameters`` (papermill's convention); the test
inserts a cell after it that overrides some of them with the small values below (the names
must be assigned in the parameters cell, so a renamed parameter fails here rather than being
silently ignored), runs the notebook in memory with nbclient on this interpreter's kernel
(a kernelspec written to a temporary folder: nothing is installed for the user) and fails on
any cell error. The committed notebooks are read, never written; each run's executed copy
is left in the test's temporary folder for inspection. Outputs go to that folder too.

The notebooks that read a public trace (``shared/traces`` beside the clone) run a second
time with an empty traces folder: they must fall back to a synthetic workload and say so.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT_S = 240
KERNEL = "sagellm-test-python"

# small parameters per notebook (the committed outputs come from the defaults)
SMALL: dict[str, dict[str, object]] = {
    "01_quickstart.ipynb": {"REQUESTS": 400, "LOADS": (0.8, 1.3), "WORKERS": 1},
    "02_prefix_routing.ipynb": {"REQUESTS": 250, "LOADS": (0.8,), "WORKERS": 1},
    "03_priorities_overload.ipynb": {"REQUESTS": 300, "LOADS": (1.5,), "WORKERS": 1,
                                     "POLICIES": ("fifo", "priority", "slo")},
    "04_parallelism_70b.ipynb": {"CONFIRM_REQUESTS": 60, "TOP_K": 2},
    # RESULTS_DIR absent: the emulated comparison, in real time (a few seconds)
    "05_sim_vs_real.ipynb": {"REQUESTS": 40, "LOADS": (0.3,), "ROUTERS": ("least_loaded",),
                             "RESULTS_DIR": "/nonexistent/fidelity"},
}


def _notebooks() -> list[str]:
    return sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def test_small_parameters_name_existing_notebooks():
    assert set(SMALL) <= set(_notebooks())


def _parameters_cell(nb) -> int:
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    tagged = [i for i in code if "parameters" in nb.cells[i].metadata.get("tags", [])]
    assert tagged == code[:1], "the first code cell, and only it, is tagged 'parameters'"
    return tagged[0]


def _assigned(source: str) -> set[str]:
    return {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory) -> Path:
    """A kernelspec that runs ipykernel on this interpreter (the project's venv)."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "sagellm tests", "language": "python"}))
    return root


def _execute(name: str, overrides: dict[str, object], kernel_dir: Path, tmp_path: Path):
    """The notebook run in memory with ``overrides`` injected after its parameters cell;
    the executed copy is written to ``tmp_path``. Fails on any cell error."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    k = _parameters_cell(nb)
    unknown = sorted(set(overrides) - _assigned(nb.cells[k].source))
    assert not unknown, f"{name}: not parameters of the notebook: {unknown}"
    source = "# injected by tests/test_notebooks.py\n" + "\n".join(
        f"{key} = {value!r}" for key, value in overrides.items())
    injected = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(k + 1, injected)
    km = KernelManager(kernel_name=KERNEL,
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    client = nbclient.NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S,
                                     shutdown_kernel="immediate",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute(cleanup_kc=True)  # shut the kernel down (nbclient does not own km)
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
        nbformat.write(nb, tmp_path / name)  # the executed copy, for a look after a failure
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    return nb


def _text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.get("output_type") == "stream")


@pytest.mark.parametrize("name", _notebooks())
def test_notebook_runs(name, kernel_dir, tmp_path):
    assert name in SMALL, f"{name}: add its small parameters to SMALL"
    _execute(name, {**SMALL[name], "OUT": str(tmp_path / "out")}, kernel_dir, tmp_path)


def _reads_traces(name: str) -> bool:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    return "TRACES_DIR" in _assigned(nb.cells[_parameters_cell(nb)].source)


@pytest.mark.parametrize("name", [n for n in _notebooks() if _reads_traces(n)])
def test_notebook_without_the_traces_says_so_and_uses_a_synthetic_workload(name, kernel_dir,
                                                                          tmp_path):
    empty = tmp_path / "no-traces"
    empty.mkdir()
    nb = _execute(name, {**SMALL[name], "OUT": str(tmp_path / "out"),
                         "TRACES_DIR": str(empty)}, kernel_dir, tmp_path)
    assert f"not found in {empty}" in _text(nb)
