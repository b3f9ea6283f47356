"""pydet: fast, exact object-detection primitives for PyTorch.

The compiled core (``pydet._C``) registers every operator as ``torch.ops.pydet.<name>``;
``pydet.ops`` holds the typed Python wrappers with their documentation.
"""

from __future__ import annotations

import os
import sys

import torch


def _rebuild_command(source_dir: str) -> str:
    target = source_dir if source_dir and os.path.isdir(source_dir) else "pydet"
    return f"{sys.executable} -m pip install --no-build-isolation --no-deps --force-reinstall --no-cache-dir {target}"


def _version_mismatch(installed: str, built: str, source_dir: str) -> ImportError | None:
    """The ImportError to raise when the running torch is not the one pydet was compiled against."""
    if installed == built:
        return None
    return ImportError(
        f"pydet was built against torch {built}, but torch {installed} is installed. pydet's compiled "
        f"kernels only work with the torch they were built against; rebuild pydet for this torch with:\n"
        f"    {_rebuild_command(source_dir)}"
    )


def _load_core():
    try:
        from pydet import _build_config
    except ImportError as e:  # a source checkout without a build
        raise ImportError(
            "pydet's compiled core is missing (pydet/_C and pydet/_build_config.py are produced by the build). "
            f"Build it with:\n    {_rebuild_command(os.path.dirname(os.path.dirname(__file__)))}"
        ) from e
    error = _version_mismatch(torch.__version__, _build_config.TORCH_VERSION, _build_config.SOURCE_DIR)
    if error is not None:
        raise error
    from pydet import _C

    return _C


_C = _load_core()
__version__: str = _C.build_info()["version"]
if _C.build_info()["cpu_capability_warning"]:  # PYDET_CPU_CAPABILITY asked for what cannot run
    import warnings

    warnings.warn(f"pydet: {_C.build_info()['cpu_capability_warning']}", RuntimeWarning, stacklevel=2)

# ops registers the fake kernels, autograd and autocast rules.
from pydet import anchors, ops  # noqa: E402, F401


def build_info() -> dict:
    """How this pydet was built.

    Keys: ``version``, ``torch_version`` (the torch it was compiled against), ``cuda`` (CUDA kernels
    included), ``cuda_version``, ``cuda_archs``, ``compiler``, ``build_type``, ``openmp`` (the
    ``_OPENMP`` version, or None), ``num_threads`` (ATen intra-op threads now),
    ``cpu_kernel_variants`` (the SIMD levels compiled, widest first), ``cpu_kernel_variant`` (the one
    this process runs), ``cpu_capability`` (its name in ATen's spelling: ``avx512``, ``avx2`` or
    ``default``; ``PYDET_CPU_CAPABILITY`` or ``ATEN_CPU_CAPABILITY`` narrow it) and
    ``cpu_capability_warning`` (why a requested capability is not the one running, or empty).
    """
    return dict(_C.build_info())


__all__ = ["__version__", "build_info", "ops"]
