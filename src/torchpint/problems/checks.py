"""Refuse, at construction, the dtypes and devices a model problem cannot run on.

A problem built on a dtype its steps do not support (half precision in a linear solve)
or on a device this machine lacks would otherwise fail later, inside the solver, with an
error that does not say what to change. These checks name the argument and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torchpint.common.devices import resolve_device

REAL_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
"""The dtypes the solvers run on (real floating point: they compare magnitudes)."""


def _names(dtypes: Sequence[torch.dtype]) -> str:
    names = [str(d).removeprefix("torch.") for d in dtypes]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def state_dtype(
    owner: str, dtype: object, allowed: Sequence[torch.dtype] = REAL_FLOATS, why: str = ""
) -> torch.dtype:
    """``dtype`` if ``owner`` (e.g. ``"Heat1D"``) can run on it, else a ``ValueError``
    (``TypeError`` for a non-dtype) saying why and which dtype to pass instead.

    ``why`` says what needs the ``allowed`` dtypes, e.g. ``"the implicit solve needs"``
    (default: the state needs a real floating-point dtype).
    """
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{owner}(dtype={dtype!r}): dtype must be a torch.dtype, e.g. "
                        f"dtype=torch.{_names(allowed[-1:])}")
    if dtype in allowed:
        return dtype
    lower = [d for d in allowed if dtype.is_floating_point and d.itemsize > dtype.itemsize]
    fix = min(lower, key=lambda d: d.itemsize) if lower else allowed[-1]
    need = why or "the state needs a real floating-point dtype:"
    raise ValueError(f"{owner}(dtype={dtype}): {need} {_names(allowed)}; pass dtype={fix}")


def state_device(owner: str, device: str | int | torch.device) -> torch.device:
    """The device ``device`` names, checked to exist here (see
    :func:`~torchpint.common.devices.resolve_device`), else a ``ValueError`` naming
    ``owner``'s argument and a device to use instead. ``"cuda"`` stays the current GPU."""
    try:
        dev = resolve_device(device)
    except ValueError as err:
        cuda = str(device).strip().startswith("cuda") or str(device).strip().isdigit()
        if cuda and not torch.cuda.is_available():
            raise ValueError(f"{owner}(device={device!r}): device {str(device)!r} is not "
                             "available (no CUDA); use device='cpu'") from err
        if cuda:
            n = torch.cuda.device_count()
            raise ValueError(
                f"{owner}(device={device!r}): device {str(device)!r} is not available (this "
                f"machine has {n} CUDA device(s), cuda:0 .. cuda:{n - 1}); use device='cuda:0' "
                "or device='cpu'") from err
        raise ValueError(f"{owner}(device={device!r}): {err}; use device='cpu'") from err
    unindexed = (isinstance(device, str) and device.strip() == "cuda") or (
        isinstance(device, torch.device) and device.type == "cuda" and device.index is None)
    return torch.device("cuda", torch.cuda.current_device()) if unindexed else dev
