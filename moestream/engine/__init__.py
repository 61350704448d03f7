"""The engine package is the composition root and the one door into moestream for cli/ and server/: they import
from here (and from errors and assets) only, and tests/test_imports.py fails the build if they reach past it.
What they need from the layers below (tokenizer, cache config parsing, predictor and policy names, the offline
trace/simulate/synth tools) is re-exported here, so a layer can be reorganised without touching the edges; see
llm.py for how the engine's own pieces fit together."""

from ..cache.config import CacheConfig, available_memory, parse_bytes
from ..cache.policy import POLICIES
from ..errors import QueueFull, SchedulerClosed
from ..prefetch.predictors import DEFAULT_THRESHOLDS, PREDICTORS
from ..synth import PRESETS, QTYPES, get_preset, qtype_of, write_synth
from ..telemetry import rss_bytes
from ..telemetry.units import human_bytes
from ..tokenizer import ChatTemplate, Tokenizer
from .device import DEVICES, resolve_device
from .drafting import DRAFT_MODES
from .generate import GenerationStats, TokenEvent
from .grammar import Constraint, GrammarError, closed_schema, json_object_grammar, json_schema_grammar
from .live import apply_live, live_changes, reload_fields
from .llm import DEFAULT_CONTEXT_CAP, Engine, EngineConfig
from .loader import ModelInfo, inspect_file
from .model_size import model_size, preset_size
from .planner import READ_SECONDS, Plan, make_plan
from .sizing import OS_RESERVE, Machine, ModelSize, auto_budget, memory_need, minimum_budget
from .sampling import GREEDY, SamplingParams
from .sharded import DEFAULT_TIMEOUT as DEFAULT_SHARD_TIMEOUT, ShardConfig, run_expert_rank
from ..shard.setup import expert_rank
from .scheduler import EngineRequest, Scheduler, StepInfo, TokenOut
from .simulation import POLICY_NAMES, PrefetchSpec, budget_slots, hit_rates, prefetch_rates
from .trace import read_trace

CACHE_POLICIES = tuple(POLICIES)

__all__ = [
    "DEVICES", "resolve_device", "DEFAULT_SHARD_TIMEOUT", "ShardConfig", "expert_rank", "run_expert_rank",
    "CACHE_POLICIES", "DEFAULT_CONTEXT_CAP", "OS_RESERVE", "Machine", "ModelSize", "auto_budget", "memory_need",
    "minimum_budget", "model_size", "preset_size", "Plan", "make_plan", "READ_SECONDS", "available_memory", "rss_bytes", "DEFAULT_THRESHOLDS", "DRAFT_MODES", "GREEDY", "POLICY_NAMES",
    "PREDICTORS", "PRESETS", "QTYPES", "CacheConfig", "ChatTemplate", "Constraint", "Engine", "EngineConfig",
    "EngineRequest", "GenerationStats", "GrammarError", "ModelInfo", "PrefetchSpec", "QueueFull", "SamplingParams",
    "Scheduler", "SchedulerClosed", "StepInfo", "TokenEvent", "TokenOut", "Tokenizer", "apply_live", "budget_slots",
    "closed_schema", "get_preset", "hit_rates", "human_bytes", "inspect_file", "json_object_grammar",
    "json_schema_grammar", "live_changes", "parse_bytes", "prefetch_rates", "qtype_of", "read_trace", "reload_fields", "write_synth",
]
