"""One exception hierarchy; every message says what is wrong and, where possible, what to do."""


class MoestreamError(Exception):
    """Base of every error moestream raises on purpose; the CLI prints it without a traceback."""


class GGUFFormatError(MoestreamError):
    """The file is not a valid GGUF (bad magic, truncated, inconsistent tensor table)."""


class UnsupportedArchitectureError(MoestreamError):
    """The GGUF names an architecture moestream has no model for."""


class UnsupportedQuantTypeError(MoestreamError):
    """A tensor uses a quantization type moestream cannot compute with."""


class TokenizerError(MoestreamError):
    """The GGUF's tokenizer metadata is missing or of an unsupported kind."""


class ConfigError(MoestreamError):
    """A user-supplied setting is invalid (sampling parameters, budgets, paths)."""


class OutputError(MoestreamError):
    """An output file cannot be written (missing directory, not enough disk space, write failure)."""


class ExpertChangedError(MoestreamError):
    """--verify-experts: an expert read again from the model file differs from its first read this run."""


class KernelInputError(MoestreamError, ValueError):
    """A native kernel was handed tensors it cannot use (dtype, layout, shape or byte size); a bug in the caller."""


class QueueFull(MoestreamError):
    """More requests are waiting than the scheduler accepts (the server answers 429: retry later)."""


class SchedulerClosed(MoestreamError):
    """The engine loop has stopped (shutdown): it takes no more requests."""


class ShardError(MoestreamError):
    """Expert sharding: a rank that disagrees, cannot be reached, died or stopped answering."""
