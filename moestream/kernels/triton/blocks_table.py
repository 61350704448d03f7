"""The types kernels/triton/blocks.py decodes in place, readable without importing triton (dispatch.py builds
its table on every machine; triton is imported only when a kernel runs)."""

TRITON_TYPES = frozenset({2, 8, 12, 13, 14, 39})  # Q4_0, Q8_0, Q4_K, Q5_K, Q6_K, MXFP4 (ggml type numbers)
