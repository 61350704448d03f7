"""Human units at the edges: bytes -> GiB/MiB, counts -> B/M/K."""

from ..engine import human_bytes as fmt_bytes  # noqa: F401 - one formatter for sizes


def fmt_count(n: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)
