"""fpsim.encode / quantize / fake_quantize on dask arrays: lazy, chunk by chunk, bitwise the
NumPy result; MX blocks are never split across chunks."""

import subprocess
import sys

import numpy as np
import pytest

import fpsim

da = pytest.importorskip("dask.array")


def _data(shape=(64, 256), seed=0):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 4
    x.reshape(-1)[[3, 77, 500]] = [np.nan, np.inf, -1e30]  # specials ride along
    return x


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a.view(f"u{a.dtype.itemsize}"), b.view(f"u{b.dtype.itemsize}"))


@pytest.mark.parametrize("fmt", ["e4m3fn", "e5m2", "e2m1fn", "e8m0fnu", "int8", "bfloat16"])
@pytest.mark.parametrize("saturate", [False, True])
def test_encode_and_quantize_equal_numpy_bitwise(fmt, saturate):
    x = _data()
    d = da.from_array(x, chunks=(16, 48))  # any chunks: every element rounds on its own
    codes = fpsim.encode(d, fmt, saturate=saturate)
    values = fpsim.quantize(d, fmt, saturate=saturate)
    assert isinstance(codes, da.Array) and codes.chunks == d.chunks
    _same(codes.compute(), fpsim.encode(x, fmt, saturate=saturate))
    _same(values.compute(), fpsim.quantize(x, fmt, saturate=saturate))


RECIPES = ["mxfp8_e4m3", "mxfp6_e2m3", "mxfp4_e2m1", "mxint8", "nvfp4", "int8",
           "int8_channel", "int8_token", "int8_feature", "int4_block32", "e4m3fn", "ggml_q4_0",
           "ggml_q8_0"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_fake_quantize_equals_numpy_bitwise(recipe):
    x = _data()
    if recipe.startswith("ggml"):
        x = np.nan_to_num(x, posinf=0.0, neginf=0.0, nan=0.0)  # ggml refuses NaN and Inf
    d = da.from_array(x, chunks=(16, 64))
    got = fpsim.fake_quantize(d, recipe)
    assert isinstance(got, da.Array)
    _same(got.compute(), fpsim.fake_quantize(x, recipe))


def test_blocks_run_in_parallel_chunks_with_a_ragged_last_chunk():
    x = _data((10, 200))  # 200 = 6 x 32 + 8: the last block is partial
    d = da.from_array(x, chunks=(3, 64))
    got = fpsim.fake_quantize(d, "mxfp8_e4m3")
    assert got.chunks == d.chunks  # not rechunked: blocks of 32 tile every chunk but the last
    _same(got.compute(), fpsim.fake_quantize(x, "mxfp8_e4m3"))
    axis0 = fpsim.fake_quantize(da.from_array(x.T.copy(), chunks=(64, 5)), "mxfp4_e2m1", axis=0)
    _same(axis0.compute(), fpsim.fake_quantize(x.T.copy(), "mxfp4_e2m1", axis=0))


def test_2d_tiles_need_whole_tiles_per_chunk():
    x = _data((256, 256))
    ok = fpsim.fake_quantize(da.from_array(x, chunks=(128, 128)), "fp8_deepseek_weight")
    _same(ok.compute(), fpsim.fake_quantize(x, "fp8_deepseek_weight"))
    with pytest.raises(ValueError, match=r"axis 0 split the recipe's blocks of 128"):
        fpsim.fake_quantize(da.from_array(x, chunks=(64, 128)), "fp8_deepseek_weight")


@pytest.mark.parametrize("recipe, chunks", [("mxfp8_e4m3", (16, 48)), ("mxfp4_e2m1", (16, 40)),
                                            ("int4_block32", (16, 100))])
def test_a_chunking_that_splits_blocks_is_refused(recipe, chunks):
    d = da.from_array(_data(), chunks=chunks)
    with pytest.raises(ValueError, match=r"split the recipe's blocks of 32.*x\.rechunk"):
        fpsim.fake_quantize(d, recipe)


def test_whole_group_scales_are_gathered_into_one_chunk():
    d = da.from_array(_data(), chunks=(16, 64))
    assert fpsim.fake_quantize(d, "int8").npartitions == 1  # one scale per tensor
    assert fpsim.fake_quantize(d, "int8_token").chunks == ((16,) * 4, (256,))
    static = fpsim.fake_quantize(d, "int8", amax=8.0)  # a fixed scale: any chunks
    assert static.chunks == d.chunks
    _same(static.compute(), fpsim.fake_quantize(_data(), "int8", amax=8.0))


def test_stochastic_rounding_needs_one_chunk():
    x = _data()
    with pytest.raises(ValueError, match="stochastic.*rechunk"):
        fpsim.quantize(da.from_array(x, chunks=(16, 64)), "e4m3fn", rounding="stochastic",
                       rng=3)
    with pytest.raises(ValueError, match="stochastic.*rechunk"):
        fpsim.fake_quantize(da.from_array(x, chunks=(16, 64)), "mxfp4_e2m1",
                            rounding="stochastic", rng=3)
    one = da.from_array(x, chunks=-1)
    _same(fpsim.quantize(one, "e4m3fn", rounding="stochastic", rng=3).compute(),
          fpsim.quantize(x, "e4m3fn", rounding="stochastic", rng=3))
    _same(fpsim.fake_quantize(one, "mxfp4_e2m1", rounding="stochastic", rng=3).compute(),
          fpsim.fake_quantize(x, "mxfp4_e2m1", rounding="stochastic", rng=3))


def test_bad_arguments_fail_eagerly():
    d = da.from_array(_data(), chunks=(16, 64))
    with pytest.raises(TypeError, match="out= is not supported for a dask array"):
        fpsim.encode(d, "e4m3fn", out=np.empty(d.shape, np.uint8))
    with pytest.raises(ValueError, match="e4m3fx"):
        fpsim.quantize(d, "e4m3fx")
    with pytest.raises(TypeError, match="dtype int64"):
        fpsim.fake_quantize(da.ones((4, 32), dtype=np.int64), "mxfp8_e4m3")
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        fpsim.encode(da.ones(4, dtype=np.int32), "e4m3fn")


def test_numpy_inputs_never_import_dask():
    code = ("import sys, numpy as np, fpsim; x = np.ones((4, 32), np.float32); "
            "fpsim.encode(x, 'e4m3fn'); fpsim.quantize(x, 'e2m1fn'); "
            "fpsim.fake_quantize(x, 'mxfp8_e4m3'); fpsim.fake_quantize(x, 'int8'); "
            "assert 'dask' not in sys.modules, 'dask imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
