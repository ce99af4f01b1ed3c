"""Triton kernels for PudNet's hot path (shipped in the wheel as ``pudnet.kernels``); they know only tensors.

- ``ahru``: the fused AHRU recurrence, ``ahru_forward`` (1 launch) and ``ahru_backward`` (2 launches);
- ``generators``: the batched weight generators of a group, ``generate_forward`` and ``generate_backward``
  (2 launches each);
- ``aot``: compile every kernel for a GPU architecture without a GPU.

The launchers take float32 tensors and return float32 buffers. ``pudnet.model.hotpath`` wraps them as the CUDA
kernels of the custom ops ``pudnet::ahru`` / ``pudnet::generate`` (dtype casts, autograd). Nothing here imports
triton at package import: the hot path imports the kernel modules only when the Triton path is taken, and on
CPU (tests) they need ``TRITON_INTERPRET=1`` set before triton is imported.
"""
