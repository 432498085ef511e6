"""Model problems refuse, at construction, the dtypes and devices they cannot run on."""

import pytest
import torch

from torchpint.core import serial_solve
from torchpint.problems import AllenCahn, Dahlquist, Heat1D
from torchpint.problems.checks import REAL_FLOATS, state_device, state_dtype


def test_state_dtype_names_the_owner_the_need_and_the_fix():
    assert state_dtype("P", torch.float16) is torch.float16
    with pytest.raises(ValueError, match=r"^P\(dtype=torch.float16\): the solve needs "
                                         r"float32 or float64; pass dtype=torch.float32$"):
        state_dtype("P", torch.float16, (torch.float32, torch.float64), "the solve needs")
    with pytest.raises(ValueError, match="float16, bfloat16, float32 or float64"):
        state_dtype("P", torch.int8, REAL_FLOATS)


def test_state_device_keeps_cpu():
    assert state_device("P", "cpu") == torch.device("cpu")
    assert state_device("P", torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("cls", [Heat1D, AllenCahn])
@pytest.mark.parametrize("dtype, fix", [
    (torch.float16, "torch.float32"), (torch.bfloat16, "torch.float32"),
    (torch.int64, "torch.float64"), (torch.complex128, "torch.float64"),
])
def test_implicit_problems_refuse_dtypes_their_solve_lacks(cls, dtype, fix):
    name = cls.__name__
    with pytest.raises(ValueError, match=(
        rf"^{name}\(dtype={dtype}\): the implicit solve needs float32 or float64; "
        rf"pass dtype={fix}$")):
        cls(nt=4, nx=5, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_dahlquist_refuses_dtypes_that_are_not_real_floats(dtype):
    with pytest.raises(ValueError, match=rf"Dahlquist\(dtype={dtype}\): the state needs a real "
                                         r"floating-point dtype: .*; pass dtype=torch.float64"):
        Dahlquist(nt=4, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_problems_that_can_run_do(dtype):
    from torchpint.core import MGRIT

    res = MGRIT(Dahlquist(nt=16, dtype=dtype), tol=1e-2).solve()
    assert res.converged and res.u.dtype == dtype
    if dtype == torch.float32:
        for cls in (Heat1D, AllenCahn):
            res = MGRIT(cls(nt=16, nx=9, dtype=dtype), tol=1e-4).solve()
            assert res.converged and res.u.dtype == dtype


def test_a_dtype_must_be_a_torch_dtype():
    with pytest.raises(TypeError, match=r"Heat1D\(dtype='float32'\): dtype must be a torch.dtype"):
        Heat1D(nt=4, dtype="float32")


@pytest.mark.parametrize("cls", [Dahlquist, Heat1D, AllenCahn])
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_gpu_is_refused_with_the_fix(cls):
    for spec in ("cuda", "cuda:1", torch.device("cuda"), 0):
        with pytest.raises(ValueError, match=rf"^{cls.__name__}\(device=.*\): device "
                                             r"'(cuda|cuda:1|0)' is not available \(no CUDA\); "
                                             r"use device='cpu'$"):
            cls(nt=4, device=spec)


@pytest.mark.parametrize("cls", [Dahlquist, Heat1D, AllenCahn])
def test_a_bad_device_name_is_refused(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\(device='gpu'\): 'gpu' is not a "
                                         r"device name.*use device='cpu'"):
        cls(nt=4, device="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("cls", [Dahlquist, Heat1D, AllenCahn])
def test_problems_on_the_gpu(cls):
    p = cls(nt=8, device="cuda")
    assert p.initial_state().device == torch.device("cuda", torch.cuda.current_device())
    assert serial_solve(p).device.type == "cuda"
    n = torch.cuda.device_count()
    with pytest.raises(ValueError, match=rf"device 'cuda:{n}' is not available \(this machine "
                                         rf"has {n} CUDA device"):
        cls(nt=8, device=f"cuda:{n}")
    if cls is not Dahlquist:
        with pytest.raises(ValueError, match="the implicit solve needs float32 or float64"):
            cls(nt=8, device="cuda", dtype=torch.float16)
