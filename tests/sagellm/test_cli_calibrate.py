"""``sagellm calibrate``: option errors, an unreachable engine, a run against a timed fake
engine writing a profile, and the simulator using that profile through an experiment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from control_plane import ConfigError
from control_plane.perf.profile import PROFILES_DIR, FittedPredictor, read_profile
from sagellm.cli import main
from sagellm.experiment import experiment_from_dict
from sim.config import InstanceSim
from sim.driver import simulate
from tests.builders import req
from tests.live.fake_timed_vllm import TimedVllm, served_in_thread

TRUE = FittedPredictor(0.002, 1e-5, 3e-9, 2e-4, 2e-7)


@pytest.fixture
def timed_engine() -> Iterator[str]:
    """A TimedVllm served from its own event loop in a thread (the CLI runs its own)."""
    with served_in_thread(TimedVllm(TRUE, api_s=0.001)) as url:
        yield url


QUICK = ["--prefill-tokens", "16,256,2047", "--batches", "1,2,4", "--contexts", "16,512",
         "--window-steps", "4", "--decode-window", "0.01", "--repeats", "1",
         "--max-batched-tokens", "4096"]


def test_calibrate_writes_a_profile_the_simulator_uses(timed_engine, tmp_path):
    out = tmp_path / "profiles" / "fake.csv"
    r = CliRunner().invoke(main, ["calibrate", "--engine", timed_engine, "--out", str(out),
                                  "--model-name", "llama-fake", "--hardware", "a fake",
                                  *QUICK])
    assert r.exit_code == 0, r.output
    assert "held-out: fit on" in r.output and f"wrote {out}" in r.output
    assert "per-request overheads: TTFT +" in r.output
    t = read_profile(out)
    assert (t.model, t.gpu, t.meta["hardware"]) == ("llama-fake", "cpu", "a fake")
    assert t.meta["probe_requests"] == "streamed" and t.meta["client_cores"] == "not pinned"
    assert set(t.extra) == {"kind", "split", "repeats", "rel_spread"}
    fp = FittedPredictor.from_table(t)
    assert fp.intercept_s == pytest.approx(TRUE.intercept_s, rel=0.02)
    assert fp.per_decode_seq_s == pytest.approx(TRUE.per_decode_seq_s, rel=0.02)
    assert fp.request_ttft_overhead_s >= 0.001

    exp = experiment_from_dict({"cluster": {"instances": [
        {"id": "cpu", "count": 2, "profile": str(out), "kv_capacity_tokens": 8192,
         "max_num_seqs": 8}]}})
    assert [x.instance_id for x in exp.instances] == ["cpu-0", "cpu-1"]
    sim = exp.instances[0]
    assert isinstance(sim, InstanceSim) and sim.predictor == fp
    assert sim.engine.max_num_seqs == 8 and sim.engine.max_num_batched_tokens == 4096
    assert sim.spec.kv_capacity_tokens == 8192 and sim.spec.gpu_type == "cpu"
    assert sim.spec.decode_s_per_token == pytest.approx(
        fp.intercept_s + 8 * (fp.per_decode_seq_s + 1024 * fp.per_context_token_s))
    res = simulate([req(f"r{i}", arrival=0.01 * i, prompt=200, output=20) for i in range(20)],
                   exp.instances)
    recs = res.records
    assert len(recs) == 20 and all(r.output_tokens == 20 for r in recs)
    # one lone request's end-to-end time is its prefill plus 19 decode steps (+ delays)
    lone = simulate([req("a", prompt=200, output=20)], exp.instances[:1]).records[0]
    steps = (fp.intercept_s + 200 * fp.per_prefill_token_s + 200 ** 2 * fp.per_attention_pair_s
             + fp.decode_run_s(1, 201, 19))
    assert lone.e2e_s == pytest.approx(steps, abs=0.005)


def test_shared_host_in_an_experiment(tmp_path):
    path = tmp_path / "p.csv"
    text = (PROFILES_DIR / "vllm-cpu-llama-small.csv").read_text()
    path.write_text(text.replace("# model:", "# neighbour_decode_slowdown_decode: 0.2\n"
                                 "# model:", 1))
    exp = experiment_from_dict({"cluster": {"instances": [
        {"id": "cpu", "count": 2, "profile": str(path), "host": "box"}]}})
    assert [x.host for x in exp.instances] == ["box", "box"]
    assert exp.instances[0].predictor.neighbour_decode_slowdown_decode == 0.2
    with pytest.raises(ConfigError, match=r"instances\[0\]\.host must be a non-empty name"):
        experiment_from_dict({"cluster": {"instances": [
            {"id": "cpu", "profile": str(path), "host": ""}]}})
    path.write_text(text.replace("# model:", "# neighbour_prefill_slowdown_prefill: -1\n"
                                 "# model:", 1))
    with pytest.raises(ConfigError, match="neighbour_prefill_slowdown_prefill='-1' must be"):
        experiment_from_dict({"cluster": {"instances": [{"id": "cpu", "profile": str(path)}]}})
    path.write_text(text.replace("# model:", "# neighbour_decode_slowdown_spin: 0.05\n"
                                 "# neighbour_spin_s: 1.0\n# model:", 1))
    pred = experiment_from_dict({"cluster": {"instances": [
        {"id": "cpu", "profile": str(path)}]}}).instances[0].predictor
    assert (pred.neighbour_decode_slowdown_spin, pred.neighbour_spin_s) == (0.05, 1.0)
    path.write_text(text.replace("# model:", "# neighbour_spin_s: soon\n# model:", 1))
    with pytest.raises(ConfigError, match=r"neighbour_spin_s='soon' must be a finite number "
                                          r">= 0 \(seconds\)"):
        experiment_from_dict({"cluster": {"instances": [{"id": "cpu", "profile": str(path)}]}})


def test_experiment_profile_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"instances\[0\]\.profile: profile 'nope\.csv': no "
                                          "such file"):
        experiment_from_dict({"cluster": {"instances": [{"id": "a", "profile": "nope.csv"}]}})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['bogus'\] for a profile"):
        experiment_from_dict({"cluster": {"instances": [
            {"id": "a", "profile": "vllm-cpu-llama-tiny", "bogus": 1}]}})


def test_builtin_profile_in_an_experiment_and_a_hardware_entry():
    exp = experiment_from_dict({"cluster": {"instances": [
        {"id": "cpu", "profile": "vllm-cpu-llama-tiny"},
        {"id": "h", "model": "llama-3-8b", "gpu": "h100", "profile": "vllm-cpu-llama-small"}]}})
    cpu, h = exp.instances
    assert cpu.predictor == FittedPredictor.from_file("vllm-cpu-llama-tiny")
    assert cpu.engine.max_num_seqs == 16   # from the profile's metadata
    assert h.predictor == FittedPredictor.from_file("vllm-cpu-llama-small")
    assert h.spec.gpu_type == "h100"


def test_unreachable_engine_is_named(tmp_path):
    r = CliRunner().invoke(main, ["calibrate", "--engine", "http://127.0.0.1:9",
                                  "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 1
    assert "cannot reach the engine at http://127.0.0.1:9" in r.output
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize(("args", "named"), [
    ([], "exactly one of --engine URL, --launch and --ops"),
    (["--engine", "http://x:1", "--launch"], "exactly one of --engine URL, --launch and --ops"),
    (["--ops", "--launch"], "exactly one of --engine URL, --launch and --ops"),
    (["--ops"], "--ops needs --model"),
    (["--ops", "--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["--ops", "--model", "llama-3-8b", "--python", "/no/python"], "--python"),
    (["--ops", "--model", "llama-3-8b", "--tp", "1,x"], "--tp"),
    (["--ops", "--model", "llama-3-8b", "--tp", "3"],
     "3: a shard count must divide llama-3-8b's 32"),
    (["--engine", "ftp://x:1"], "--engine"),
    (["--launch", "--repeats", "0"], "--repeats"),
    (["--launch", "--window-steps", "0"], "--window-steps"),
    (["--launch", "--decode-window", "0"], "--decode-window"),
    (["--launch", "--prefill-tokens", "16,x"], "--prefill-tokens"),
    (["--launch", "--batches", "0"], "--batches"),
    (["--launch", "--cpu-core", "999"], "--cpu-core"),
    (["--launch", "--cpu-core", "a-b"], "--cpu-core"),
    (["--launch", "--kv-cache-bytes", "lots"], "--kv-cache-bytes"),
    (["--launch", "--max-num-seqs", "0"], "--max-num-seqs"),
    (["--launch", "--size", "huge"], "--size"),
    (["--launch", "--design", "nope"], "--design"),
    (["--launch", "--neighbour-core", "0"], "--neighbour-core 0 overlaps --cpu-core 0"),
    (["--launch", "--neighbour", "http://x:1"], "--neighbour URL goes with --engine"),
    (["--engine", "http://x:1", "--neighbour-core", "1"], "--neighbour-core goes with"),
    (["--engine", "http://x:1", "--engine-arg", "--foo"], "--engine-arg goes with --launch"),
    (["--launch", "--client-core", "999"], "--client-core"),
    (["--launch", "--neighbour-repeats", "0"], "--neighbour-repeats"),
])
def test_bad_options_are_named(tmp_path, args, named):
    """Each bad option is refused before anything starts, with its name in the message."""
    r = CliRunner().invoke(main, ["calibrate", "--out", str(tmp_path / "p.csv"), *args])
    assert r.exit_code == 2, r.output
    assert named in r.output


def test_out_must_be_a_file_without_ops(tmp_path):
    r = CliRunner().invoke(main, ["calibrate", "--launch", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "is a folder" in r.output, r.output


def _recording_python(tmp_path):
    """An 'interpreter' that writes its arguments to a file: what --ops would run."""
    log = tmp_path / "argv.txt"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" > {log}\n')
    fake.chmod(0o755)
    return fake, log


def test_ops_profiles_a_moe_models_moe_block(tmp_path):
    """``calibrate --ops`` on a MoE model measures its MoE block too (the profiles the
    ``moe_gemm`` coefficients are fitted on); a dense model's parts stay the three."""
    fake, log = _recording_python(tmp_path)
    for model, parts in (("mixtral-8x7b", "mlp,attention,layer,moe"),
                         ("llama-3-8b", "mlp,attention,layer")):
        r = CliRunner().invoke(main, ["calibrate", "--ops", "--model", model, "--tp", "2",
                                      "--python", str(fake), "--out", str(tmp_path / "o")])
        assert r.exit_code == 0, r.output
        argv = log.read_text().split()
        assert argv[argv.index("--parts") + 1] == parts
        assert argv[argv.index("--model") + 1] == model


def test_ops_refuses_a_shard_count_that_splits_no_expert_evenly(tmp_path):
    fake, log = _recording_python(tmp_path)
    cfg = tmp_path / "moe" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text('{"num_hidden_layers": 2, "hidden_size": 256, "num_attention_heads": 8, '
                   '"intermediate_size": 512, "moe_intermediate_size": 100, "num_experts": 4, '
                   '"num_experts_per_tok": 2, "vocab_size": 1000}')
    r = CliRunner().invoke(main, ["calibrate", "--ops", "--model", str(cfg), "--tp", "1,8",
                                  "--python", str(fake), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    assert "8: a shard count must divide" in r.output and "expert width 100" in r.output
    assert not log.exists()
