"""Launch-time argument validation, the argument table against the C sources, and backend selection.

Every bad call must raise ValueError before anything reaches a kernel, with a
message that names the kernel and the offending argument.
"""
from __future__ import annotations

import ctypes
import re
from pathlib import Path

import numpy as np
import pytest

from glasscuda.backend import get_backend, gpu_available
from glasscuda.backend.sources import kernel_dir
from glasscuda.backend.cases import CASES
from glasscuda.backend.table import INT64, KERNELS, REAL

# Integer and real arguments that pass every check, per kernel (glasscuda/backend/cases.py).
VALID_SCALARS = {name: entry.valid for name, entry in CASES.items()}

# Scalar values that break one of the table's conditions (shape agreement, ranges).
BROKEN_CHECKS = [
    ("im2col", "HO", 4), ("im2col", "WO", 1), ("im2col", "PH", 3), ("im2col", "SH", 0),
    ("col2im", "WO", 3), ("col2im", "KW", 0),
    ("maxpool_forward", "HO", 3), ("maxpool_forward", "KH", 6), ("maxpool_forward", "SW", 0),
    ("maxpool_backward", "WO", 1),
    ("global_avgpool_forward", "HW", 0), ("global_avgpool_backward", "HW", 0),
    ("bce_with_logits", "eps", 0.5), ("bce_with_logits", "eps", 0.0),
    ("focal_with_logits", "gamma", -0.5),
    ("softmax_cross_entropy", "K", 0),
    ("adam_update", "decoupled", 2), ("adam_update", "one_minus_beta1", 0.0),
    ("adam_update", "one_minus_beta2", 1.5),
    ("adam_update", "eps", 0.0), ("adam_update", "bc1", 0.0), ("adam_update", "lr", -1e-3),
    ("adam_update", "weight_decay", -0.1),
]


def array_size(kernel, array):
    return eval(array.size, {"__builtins__": {}}, {n: VALID_SCALARS[kernel.name][n] for n in kernel.ints})


def valid_args(name, dtype=np.float64):
    """Arguments for one correct launch of ``name``: zero arrays of the right sizes and dtypes."""
    kernel = KERNELS[name]
    args = dict(VALID_SCALARS[name])
    for a in kernel.arrays:
        args[a.name] = np.zeros(array_size(kernel, a), np.int64 if a.dtype == INT64 else dtype)
    return args


def assert_rejected(cpu, kernel, args, *named):
    """The launch raises ValueError whose message names the kernel and every name in ``named``."""
    with pytest.raises(ValueError) as caught:
        cpu.launch(kernel, **args)
    message = str(caught.value)
    assert kernel in message, f"message does not name the kernel: {message}"
    for name in named:
        assert re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", message), \
            f"message does not name '{name}': {message}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_valid_arguments_launch(cpu, kernel, dtype):
    cpu.launch(kernel, **valid_args(kernel, dtype))


# Bad arguments, each applied to every kernel it applies to -------------------

def _reals(k):
    return [a for a in k.arrays if a.dtype == REAL]


def wrong_dtype(k, args):
    a = _reals(k)[0]
    args[a.name] = args[a.name].astype(np.int32)
    return a.name


def half_precision(k, args):
    a = _reals(k)[-1]
    args[a.name] = args[a.name].astype(np.float16)
    return a.name


def float_index_array(k, args):
    a = next((a for a in k.arrays if a.dtype == INT64), None)
    if a is None:
        return None
    args[a.name] = args[a.name].astype(np.float64)
    return a.name


def mixed_precision(k, args):
    if len(_reals(k)) < 2:
        return None
    a = _reals(k)[-1]
    args[a.name] = args[a.name].astype(np.float32)
    return a.name


def non_contiguous(k, args):
    a = k.arrays[-1]
    value = args[a.name]
    args[a.name] = np.zeros(2 * value.size, value.dtype)[::2]
    return a.name


def strided_view(k, args):
    a = k.arrays[0]
    value = args[a.name]
    args[a.name] = np.zeros((value.size, 2), value.dtype)[:, 0]
    return a.name


def wrong_size(k, args):
    a = k.arrays[0]
    args[a.name] = np.zeros(args[a.name].size + 1, args[a.name].dtype)
    return a.name


def too_small(k, args):
    a = k.arrays[-1]
    args[a.name] = args[a.name][:-1]
    return a.name


def not_an_array(k, args):
    a = k.arrays[0]
    args[a.name] = args[a.name].tolist()
    return a.name


def negative_int(k, args):
    args[k.ints[0]] = -1
    return k.ints[0]


def bool_as_int(k, args):
    args[k.ints[-1]] = True
    return k.ints[-1]


def numpy_bool_as_int(k, args):
    args[k.ints[0]] = np.True_
    return k.ints[0]


def float_as_int(k, args):
    args[k.ints[0]] = float(args[k.ints[0]])
    return k.ints[0]


def non_finite_real(k, args):
    if not k.reals:
        return None
    args[k.reals[0]] = float("nan")
    return k.reals[0]


def infinite_real(k, args):
    if not k.reals:
        return None
    args[k.reals[-1]] = float("inf")
    return k.reals[-1]


def bool_as_real(k, args):
    if not k.reals:
        return None
    args[k.reals[-1]] = True
    return k.reals[-1]


def string_as_real(k, args):
    if not k.reals:
        return None
    args[k.reals[0]] = "0.1"
    return k.reals[0]


def missing_argument(k, args):
    name = k.params[len(k.params) // 2]
    del args[name]
    return name


def extra_argument(k, args):
    args["stride"] = 1
    return "stride"


def read_only_output(k, args):
    a = next(a for a in k.arrays if a.output)
    args[a.name].flags.writeable = False
    return a.name


def output_overlaps_input(k, args):
    """An output and another real array sharing one element of one buffer."""
    allowed = {frozenset(p) for p in k.may_alias}
    for out in (a for a in k.arrays if a.output and a.dtype == REAL):
        for other in k.arrays:
            if other is out or other.dtype != REAL or frozenset((out.name, other.name)) in allowed:
                continue
            n_out, n_other = args[out.name].size, args[other.name].size
            buffer = np.zeros(n_out + n_other, args[out.name].dtype)
            args[out.name], args[other.name] = buffer[:n_out], buffer[n_out - 1:n_out - 1 + n_other]
            return (out.name, other.name)
    return None


MUTATIONS = [wrong_dtype, half_precision, float_index_array, mixed_precision, non_contiguous, strided_view,
             wrong_size, too_small, not_an_array, negative_int, bool_as_int, numpy_bool_as_int, float_as_int,
             non_finite_real, infinite_real, bool_as_real, string_as_real, missing_argument, extra_argument,
             read_only_output, output_overlaps_input]


def _applicable():
    cases = []
    for mutation in MUTATIONS:
        for name in sorted(KERNELS):
            if mutation(KERNELS[name], valid_args(name)) is not None:
                cases.append(pytest.param(name, mutation, id=f"{mutation.__name__}-{name}"))
    return cases


@pytest.mark.parametrize("kernel,mutation", _applicable())
def test_bad_argument_is_rejected_naming_kernel_and_argument(cpu, kernel, mutation):
    args = valid_args(kernel)
    named = mutation(KERNELS[kernel], args)
    assert_rejected(cpu, kernel, args, *(named if isinstance(named, tuple) else (named,)))


@pytest.mark.parametrize("kernel,argument,value", BROKEN_CHECKS,
                         ids=[f"{k}-{a}={v}" for k, a, v in BROKEN_CHECKS])
def test_failed_shape_or_range_check_is_rejected(cpu, kernel, argument, value):
    args = valid_args(kernel)
    args[argument] = value
    assert_rejected(cpu, kernel, args, argument)


def test_two_outputs_overlapping_are_rejected(cpu):
    args = valid_args("bce_with_logits")
    buffer = np.zeros(9)
    args["loss"], args["grad"] = buffer[:5], buffer[4:]
    assert_rejected(cpu, "bce_with_logits", args, "loss", "grad")


def test_int64_output_overlapping_a_real_input_is_rejected(cpu):
    args = valid_args("maxpool_forward")
    raw = np.zeros(args["x"].size, np.float64)
    args["x"] = raw
    args["argmax"] = raw[:args["argmax"].size].view(np.int64)
    assert_rejected(cpu, "maxpool_forward", args, "argmax", "x")


def test_unknown_kernel_is_rejected(cpu):
    with pytest.raises(ValueError, match="conv3d"):
        cpu.launch("conv3d", x=np.zeros(1))


@pytest.mark.parametrize("kernel,pair", [(k.name, p) for k in KERNELS.values() for p in k.may_alias],
                         ids=lambda v: v if isinstance(v, str) else "=".join(v))
def test_declared_in_place_aliasing_is_accepted(cpu, kernel, pair):
    args = valid_args(kernel)
    args[pair[1]] = args[pair[0]]
    cpu.launch(kernel, **args)


def test_in_place_pair_overlapping_only_partly_is_rejected(cpu):
    buffer = np.arange(-3.0, 6.0)
    assert_rejected(cpu, "relu_forward", {"x": buffer[:8], "y": buffer[1:], "n": 8}, "y", "x")


def test_zero_sized_launch_is_accepted(cpu):
    cpu.launch("relu_forward", x=np.zeros(0), y=np.zeros(0), n=0)
    db = np.full(3, np.nan, np.float32)
    cpu.launch("bias_grad_partial", dy=np.zeros(0, np.float32), partial=np.zeros(0, np.float32),
               N=0, C=3, S=4, chunk=4, J=1)
    cpu.launch("bias_grad_reduce", partial=np.zeros(0, np.float32), db=db, C=3, K=0)
    assert (db == 0).all()   # a sum over no element


# The table against the C sources ---------------------------------------------

KERNEL_SIGNATURE = re.compile(r"KERNEL\((\w+)\)\s*\(([^)]*)\)", re.S)
PARAMETER = re.compile(r"^(const\s+)?(real|long\s+long)\s*(\*)?\s*(\w+)$")


def parse_sources():
    """{kernel: (file, [(kind, name, dtype, const)])} from every KERNEL(...)(...) in kernels/*.cu."""
    found = {}
    for path in sorted(Path(kernel_dir()).glob("*.cu")):
        text = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
        text = re.sub(r"//[^\n]*", "", text)
        for name, params in KERNEL_SIGNATURE.findall(text):
            signature = []
            for raw in params.split(","):
                match = PARAMETER.match(" ".join(raw.split()))
                assert match, f"{path.name}: cannot read parameter {raw.strip()!r} of {name}"
                const, ctype, pointer, pname = match.groups()
                ctype = INT64 if ctype.startswith("long") else REAL
                kind = "array" if pointer else ("int" if ctype == INT64 else "real")
                signature.append((kind, pname, ctype if pointer else None, bool(const) if pointer else None))
            assert name not in found, f"kernel {name} is defined twice ({found[name][0]} and {path.name})"
            found[name] = (path.name, signature)
    return found


def table_signature(kernel):
    return ([("array", a.name, a.dtype, not a.output) for a in kernel.arrays]
            + [("int", n, None, None) for n in kernel.ints]
            + [("real", n, None, None) for n in kernel.reals])


def test_every_kernel_in_the_sources_has_a_table_row_and_vice_versa():
    sources = parse_sources()
    assert sources, "no KERNEL(...) found in kernels/*.cu"
    assert sorted(set(sources) - set(KERNELS)) == [], "kernels in the sources but not in the table"
    assert sorted(set(KERNELS) - set(sources)) == [], "table rows with no kernel in the sources"


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_table_row_matches_the_c_signature(name):
    sources = parse_sources()
    if name not in sources:
        pytest.fail(f"{name} is in the table but no kernels/*.cu defines it")
    source_file, signature = sources[name]
    kernel = KERNELS[name]
    assert kernel.source == source_file
    assert table_signature(kernel) == signature, (
        f"{name}: table {table_signature(kernel)} != C source {signature}")


def test_signature_parser_reads_what_it_should():
    text = "KERNEL(k)(const real* a, long long* b, real* c, long long n, real s)"
    (name, params), = KERNEL_SIGNATURE.findall(text)
    parsed = [PARAMETER.match(" ".join(p.split())).groups() for p in params.split(",")]
    assert name == "k"
    assert parsed == [("const ", "real", "*", "a"), (None, "long long", "*", "b"), (None, "real", "*", "c"),
                      (None, "long long", None, "n"), (None, "real", None, "s")]


def test_table_conditions_only_use_the_kernels_own_arguments():
    for kernel in KERNELS.values():
        scalars = set(kernel.ints) | set(kernel.reals)
        for expression in (*kernel.checks, kernel.threads, *(a.size for a in kernel.arrays)):
            names = set(re.findall(r"[A-Za-z_]\w*", expression)) - {"in"}
            assert names <= scalars, f"{kernel.name}: {expression!r} uses {names - scalars}"
        for a, b in kernel.may_alias:
            assert {a, b} <= {x.name for x in kernel.arrays}, f"{kernel.name}: may_alias {a, b}"
        assert set(kernel.positive) <= set(kernel.ints)


# Backends --------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(KERNELS))
def test_cpu_library_exports_both_precisions(cpu, name):
    library = ctypes.CDLL(str(cpu.launcher.path))
    for suffix in ("f32", "f64"):
        assert hasattr(library, f"{name}_{suffix}"), f"{cpu.launcher.path} lacks {name}_{suffix}"


def test_asking_for_gpu_without_one_is_a_clear_error():
    if gpu_available():
        pytest.skip("a GPU answers here")
    with pytest.raises(RuntimeError) as caught:
        get_backend("gpu")
    message = str(caught.value)
    assert "CuPy" in message or "CUDA" in message, message


def test_auto_picks_the_cpu_without_a_gpu():
    if gpu_available():
        pytest.skip("a GPU answers here")
    assert get_backend("auto").name == "cpu"


def test_unknown_device_is_rejected():
    with pytest.raises(ValueError, match="nope"):
        get_backend("nope")


def test_a_signature_is_validated_once_and_overlaps_every_time(cpu, monkeypatch):
    from glasscuda.backend import launch
    calls = []
    real_validate = launch._validate
    monkeypatch.setattr(launch, "_validate", lambda *a: calls.append(a[0].name) or real_validate(*a))
    monkeypatch.setattr(launch, "_VALIDATED", {})
    x, y = np.ones(7, np.float32), np.empty(7, np.float32)
    cpu.launch("relu_forward", x=x, y=y, n=7)
    cpu.launch("relu_forward", x=np.ones(7, np.float32), y=np.empty(7, np.float32), n=7)
    assert calls == ["relu_forward"]
    with pytest.raises(ValueError, match="relu_backward: output 'dx' overlaps argument 'x'"):
        both = np.ones(8, np.float32)
        cpu.launch("relu_backward", x=both[:7], dy=np.ones(7, np.float32), dx=both[1:], n=7)
    cpu.launch("relu_forward", x=x.astype(np.float64), y=y.astype(np.float64), n=7)
    with pytest.raises(ValueError, match="relu_forward: argument 'y' has 7 elements, expected n = 6"):
        cpu.launch("relu_forward", x=x[:6], y=y, n=6)
    buffer = np.ones(8, np.float32)   # the cached signature again, partly in place this time
    with pytest.raises(ValueError, match="relu_forward: output 'y' overlaps argument 'x'"):
        cpu.launch("relu_forward", x=buffer[:7], y=buffer[1:], n=7)
    assert calls == ["relu_forward", "relu_backward", "relu_forward", "relu_forward"]
