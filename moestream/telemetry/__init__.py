"""Counters, latency samples and memory readings. Imported by every layer; imports nothing of ours."""

from .stats import Samples, nearest_rank, peak_rss_bytes, rss_bytes

__all__ = ["Samples", "nearest_rank", "peak_rss_bytes", "rss_bytes"]
