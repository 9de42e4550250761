"""Triton kernels for the fast paths (imported only on CUDA, or by tests through Triton's interpreter)."""
