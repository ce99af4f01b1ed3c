"""Triton kernels for PudNet's hot path (shipped in the wheel as ``pudnet.kernels``).

- ``ahru``: the fused AHRU recurrence (1 launch forward, 2 backward) and ``ahru_triton``;
- ``generators``: the batched weight generators of a group (2 launches forward, 2 backward) and
  ``generate_triton``;
- ``bench``: ``run_kernel_bench`` (``pudnet bench kernels``); ``aot``: compile every kernel for a GPU
  architecture without a GPU.

Nothing here imports triton at package import: ``pudnet.model.hotpath`` imports the kernel modules only when
the Triton path is taken (CUDA tensors, or forced), and on CPU they need ``TRITON_INTERPRET=1`` set before
triton is imported.
"""
