"""sagellm compare on Ray: a local Ray instance gives the serial results (Ray is in the
``dev`` extra, so CI runs this; elsewhere it skips when Ray is not installed)."""

from __future__ import annotations

import pandas as pd
import pytest

from sagellm.compare import run_grid
from sagellm.compare_store import read_run
from tests.sagellm.compare_helpers import small_grid, write_azure_trace

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'sagellm[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_executor_gives_the_serial_results(tmp_path, local_ray):
    trace = write_azure_trace(tmp_path / "tiny_azure.csv")
    grid = small_grid(trace, loads=(1.0, 1.5), routers=("least_loaded",))
    serial = run_grid(grid, tmp_path / "serial", workers=1, progress=False)
    on_ray = run_grid(grid, tmp_path / "ray", executor="ray", progress=False)
    pd.testing.assert_frame_equal(serial, on_ray)
    files = sorted((tmp_path / "ray" / "runs").glob("*.parquet"))
    assert len(files) == 4
    for f in files:
        a, _ = read_run(f)
        b, _ = read_run(tmp_path / "serial" / "runs" / f.name)
        pd.testing.assert_frame_equal(a, b)
    # resuming works the same way on Ray: nothing left to run
    again = run_grid(grid, tmp_path / "ray", executor="ray", workers=1, progress=False)
    pd.testing.assert_frame_equal(serial, again)
