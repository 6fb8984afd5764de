"""QuantConfig / presets / QuantContext (no model weights needed)."""

import pathlib

import numpy as np
import pytest

from fpsim.models import context, numerics
from fpsim.models import PRESETS, SITES, QuantConfig, QuantContext, preset
from fpsim.models.config import LINEAR_SITES, MATMUL_SITES

X = np.random.default_rng(0).standard_normal((6, 32)).astype(np.float32)
X[:, 5] *= 12  # an outlier feature
W = np.random.default_rng(1).standard_normal((32, 16)).astype(np.float32) / 4


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_runs_and_round_trips(name, tmp_path):
    ctx = QuantContext(name, trace=True)
    ctx.calibrating = ctx.config.weight_algorithm is not None  # GPTQ/AWQ: X calibrates
    y = ctx.linear("up", 0, X, W)
    ref = X @ W
    assert y.shape == ref.shape and y.dtype == np.float32
    rel = np.linalg.norm(y - ref) / np.linalg.norm(ref)
    cfg = preset(name)
    if not any(s.split(".")[0] in LINEAR_SITES for s in cfg.sites):  # fp32, FP8 attention
        assert rel == 0
    else:
        assert 0 < rel < 0.5
    if "attn.qk" in cfg.accumulators:  # attention on an instruction changes attention
        from fpsim.models.llama import attention, attention_mma

        q = k = v = X[None, None, :, :32].copy()
        a = attention_mma(q, k, v, ctx=ctx, layer=0, qk=ctx.instruction("attn.qk", 0),
                          pv=ctx.instruction("attn.pv", 0))
        ref = attention(q, k, v)
        assert 0 < np.linalg.norm(a - ref) / np.linalg.norm(ref) < 0.1
    for ext in ("json", "toml"):
        cfg.save(tmp_path / f"c.{ext}")
        assert QuantConfig.load(tmp_path / f"c.{ext}") == cfg


def test_fp32_context_is_identity_and_free():
    ctx = QuantContext(None)
    assert ctx.is_fp32
    assert ctx.act("q.input", 0, X) is X
    np.testing.assert_array_equal(ctx.linear("q", 0, X, W), X @ W)


def test_overrides_and_exclusions():
    cfg = QuantConfig(sites={"q": "int8_channel", "q.input": "int8_token"},
                      layers={2: {"q": "mxfp4_e2m1"}}, exclude_layers=(0, -1))
    assert cfg.spec_for("q", 0, 6) is None  # excluded
    assert cfg.spec_for("q", 5, 6) is None  # -1 == last layer
    assert cfg.spec_for("q", 2, 6).format.name == "float4_e2m1fn"
    assert cfg.spec_for("q", 3, 6).format.name == "int8"
    assert cfg.spec_for("k", 3, 6) is None


def test_weights_are_quantized_per_output_channel_and_cached():
    ctx = QuantContext(QuantConfig(sites={"up": "int8_channel"}))
    y1 = ctx.linear("up", 0, X, W)
    y2 = ctx.linear("up", 0, X, W)
    np.testing.assert_array_equal(y1, y2)
    assert len(ctx._weights) == 1
    wq = next(iter(ctx._weights.values()))
    # one scale per output column of the (in, out) weight: each column's max maps to 127
    col_scale = np.abs(W).max(axis=0) / 127
    np.testing.assert_allclose(np.abs(wq).max(axis=0), 127 * col_scale, rtol=1e-6)


def test_trace_records_sites():
    ctx = QuantContext("int8", trace=True)
    ctx.linear("up", 3, X, W)
    st = ctx.trace[("up.input", 3)]
    assert st.elements == X.size and st.amax == pytest.approx(float(np.abs(X).max()))
    assert 20 < st.sqnr_db < 60
    assert ("up", 3) in ctx.trace
    d = st.to_dict()
    assert set(d) >= {"amax", "saturated", "underflow", "sqnr_db"}


def _stats_by_hand(x, xq, limit):
    """SiteStats fields from whole float64 arrays (``limit``: the saturation threshold)."""
    x64, q64 = x.astype(np.float64), xq.astype(np.float64)
    fin = np.isfinite(x64)
    with np.errstate(invalid="ignore"):
        sat = int(np.count_nonzero(np.abs(x64) > limit))
    return dict(elements=x.size, amax=float(np.abs(x64[fin]).max()), saturated=sat,
                underflow=int(np.count_nonzero((x64 != 0) & (q64 == 0))),
                signal=float(np.sum(x64[fin] ** 2)),
                noise=float(np.sum((q64[fin] - x64[fin]) ** 2)))


@pytest.mark.parametrize("spec", ["int8_channel", "float8_e4m3fn", "mxfp4_e2m1", "nvfp4"])
@pytest.mark.parametrize("chunk", [7, 1 << 18])
def test_traced_statistics_do_not_depend_on_the_chunking(spec, chunk, monkeypatch):
    # the statistics are accumulated over chunks of bounded size: the same as one pass
    from fpsim.models import context
    from fpsim.quant import fake_quantize, recipe as make_spec
    from fpsim.quant.blocks import mx_fake_quantize

    monkeypatch.setattr(context, "_STATS_CHUNK", chunk)
    x = (np.random.default_rng(2).standard_normal((40, 64))
         * np.exp(np.random.default_rng(3).standard_normal((40, 64)) * 3)).astype(np.float32)
    x[0, :3] = [np.inf, np.nan, 1e-30]
    s = make_spec(spec)
    ctx = QuantContext(QuantConfig(sites={"up.input": spec}), trace=True)
    xq = ctx._traced("up.input", 0, x, s)
    st = ctx.trace[("up.input", 0)]
    if s.is_mx:  # each block's range: its scale times the largest element
        _, codes = mx_fake_quantize(x, s.format, block_size=s.block_size,
                                    scale_rule=s.scale_rule, rng=0, return_details=True)
        limit = np.repeat(np.ldexp(s.format.max, codes.astype(np.int64) - 127), s.block_size, -1)
    else:  # the largest finite magnitude of the quantized tensor, and infinities
        np.testing.assert_array_equal(xq, fake_quantize(x, s, rng=0))
        limit = np.where(np.isinf(x), -1.0, np.max(np.abs(xq[np.isfinite(xq)])))
    want = _stats_by_hand(x, xq, limit)
    for f in ("elements", "amax", "saturated", "underflow"):
        assert getattr(st, f) == want[f], f
    assert st.signal == pytest.approx(want["signal"], rel=1e-12)
    assert st.noise == pytest.approx(want["noise"], rel=1e-12)


def test_trace_weights_records_the_weights_once_without_tracing_activations():
    ctx = QuantContext("int8")
    ctx.trace_weights = True
    y = ctx.linear("up", 0, X, W)
    assert set(ctx.trace) == {("up", 0)}  # the weight only
    st = ctx.trace[("up", 0)]
    ctx.tracing = True  # from now on the activations too; the weight is not quantized again
    np.testing.assert_array_equal(ctx.linear("up", 0, X, W), y)
    assert ctx.trace[("up", 0)] is st and st.calls == 1
    assert ctx.trace[("up.input", 0)].calls == 1
    full = QuantContext("int8", trace=True)  # the same statistics as tracing from the start
    full.linear("up", 0, X, W)
    assert full.trace[("up", 0)] == st


def test_instruction_weights_are_cached_in_float32_exactly():
    # a matrix instruction's weight operands are kept as float32 where that is exact (half the
    # memory of float64): the product is the one the float64 operands give
    from fpsim.quant import quantize_tensor

    ctx = QuantContext("fp8_hopper")
    y = ctx.linear("up", 0, X, W)
    (vb, sb), = [v for k, v in ctx._weights.items() if k[-1] == "mma"]
    assert vb.dtype == np.float32 and sb.dtype == np.float32
    inst = ctx.instruction("up", 0)
    qw = quantize_tensor(W, ctx.weight_spec(ctx.spec("up", 0)))
    va, sa = ctx.mma_operand(inst, "up", "up.input", 0, X, "A")
    want = ctx.mma_product(inst, "up", va, sa, qw.element_values(), qw.element_scale())
    np.testing.assert_array_equal(y, want)
    wide = np.array([1.0, 1 + 2.0**-40])  # not float32: kept as it is
    assert context._compact(wide) is wide


def test_delayed_scaling_uses_history():
    ctx = QuantContext("fp8_e4m3_delayed", trace=True)
    big = X * 100
    ctx.linear("up", 0, big, W)  # step 0: scale 1, |x| > 448 saturates
    assert ctx.trace[("up.input", 0)].saturated > 0
    ds = ctx._delayed[("up.input", 0)]
    assert ds.scale == np.float32(np.abs(big).max() / 448)


def test_torch_dynamic_int8_hand_case():
    # w amax 1.275 -> s_w = 0.01; x in [0, 1.27] -> s_x = 0.01, zero point 0
    w = np.array([[1.275, -0.5], [0.25, 0.0]], np.float32)
    x = np.array([[1.27, 0.5]], np.float32)
    y = numerics.torch_dynamic_int8_linear(x, w)
    # integers: x -> [127, 50], w -> [[128 -> clamp 127, -50], [25, 0]]
    acc = np.array([[127 * 127 + 50 * 25, 127 * -50]])
    np.testing.assert_allclose(y, acc * np.float32(0.01) * np.float32(0.01), rtol=1e-6)


TORCH_GOLDEN = pathlib.Path(__file__).parents[1] / "golden" / "torch_dynamic_int8.npz"


def test_torch_dynamic_int8_matches_pytorch_bit_for_bit():
    """Against torch 2.13's quantize_dynamic (tests/golden/make_torch_dynamic_golden.py):
    the quantized weights and every output bit, bias included."""
    with np.load(TORCH_GOLDEN) as g:
        names = list(g["case_names"])
        assert {"gaussian", "positive", "negative", "outlier", "zeros", "minilm_query"} <= set(
            names)
        for name in names:
            x, w, b, y = (g[f"{name}_{k}"] for k in "xwby")
            s_w = np.float32(np.abs(w).max() / 127.5)
            assert s_w == np.float32(g[f"{name}_w_scale"]), name
            np.testing.assert_array_equal(np.clip(np.rint(w / s_w), -128, 127),
                                          g[f"{name}_w_int"], err_msg=name)
            got = numerics.torch_dynamic_int8_linear(x, w.T, b)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, y, err_msg=name)


@pytest.mark.parametrize(
    "call, exc, fragment",
    [
        (lambda: QuantConfig(sites={"qq": "int8"}), ValueError, "did you mean 'q'"),
        (lambda: QuantConfig(sites={"q": "int9"}), ValueError, "int8"),
        (lambda: preset("int8_dynamic"), ValueError, "presets"),
        (lambda: preset(3), TypeError, "QuantConfig"),
        (lambda: QuantConfig(linear_mode="magic"), ValueError, "linear_mode"),
        (lambda: QuantConfig(delayed={"history": 3}), ValueError, "delayed"),
        (lambda: QuantConfig.from_dict({"sites": {}, "extra": 1}), ValueError, "extra"),
        (lambda: QuantConfig(layers={"1": {"q": "int8"}}), TypeError, "ints"),
    ],
)
def test_invalid_configs(call, exc, fragment):
    with pytest.raises(exc, match=fragment):
        call()


def test_toml_keeps_fp32_layer_overrides(tmp_path):
    cfg = QuantConfig(sites={"q": "int8"}, layers={0: {"q": None}})
    cfg.save(tmp_path / "c.toml")
    back = QuantConfig.load(tmp_path / "c.toml")
    assert back == cfg and back.spec_for("q", 0) is None and back.spec_for("q", 1) is not None


# ---- QuantConfig validation (issue 9): typos, layer indices, types, files, sites ---------
from fpsim.models.bert import SITES as BERT_SITES  # noqa: E402
from fpsim.models.llama import SITES as LLAMA_SITES  # noqa: E402


@pytest.mark.parametrize(
    "call, exc, fragment",
    [
        # options: typos and options that do not apply are errors, not silently ignored
        (lambda: QuantConfig(linear_mode="llm_int8", options={"treshold": 6.0}), ValueError,
         r"unknown option 'treshold' \(did you mean 'threshold'\?\)"),
        (lambda: QuantConfig(options={"alpha": 0.5}), ValueError,
         "alpha.*linear_mode='smoothquant'"),
        (lambda: QuantConfig(linear_mode="smoothquant", options={"alpha": "0.5"}), TypeError,
         "alpha"),
        (lambda: QuantConfig(linear_mode="smoothquant", options={"alpha": 1.5}), ValueError,
         r"alpha.*\[0, 1\]"),
        (lambda: QuantConfig(options={"promote_every": 128}), ValueError,
         "promote_every.*accumulator"),
        (lambda: QuantConfig(accumulator="tensorcore", options={"promote_every": 1.5}),
         TypeError, "promote_every"),
        (lambda: QuantConfig(accumulator="fp16", options={"accumulator_bits": 14}), ValueError,
         "accumulator_bits.*tensorcore"),
        (lambda: QuantConfig(options=[("alpha", 0.5)]), TypeError, "options must be a dict"),
        # layer indices
        (lambda: QuantConfig(exclude_layers="12"), TypeError, "exclude_layers"),
        (lambda: QuantConfig(exclude_layers=(1.5,)), TypeError, "exclude_layers"),
        (lambda: QuantConfig(exclude_layers=(True,)), TypeError, "exclude_layers"),
        (lambda: QuantConfig(layers={True: {"q": "int8"}}), TypeError, "ints"),
        (lambda: QuantConfig.from_dict({"layers": {"1.5": {"q": "int8"}}}), ValueError,
         "layers key '1.5'"),
        (lambda: QuantConfig.from_dict({"exclude_layers": "12"}), TypeError, "exclude_layers"),
        # field types
        (lambda: QuantConfig(sites=["q"]), TypeError, "sites must be a dict"),
        (lambda: QuantConfig(sites={"q": 8}), TypeError, "site 'q'"),
        (lambda: QuantConfig(layers={0: "int8"}), TypeError, "layers"),
        (lambda: QuantConfig(accumulator=32), TypeError, "accumulator"),
        (lambda: QuantConfig(accumulators={"q": 3}), TypeError, "accumulators"),
        (lambda: QuantConfig(linear_mode=None), TypeError, "linear_mode"),
        (lambda: QuantConfig(name=3), TypeError, "name"),
        (lambda: QuantConfig(delayed=[16]), TypeError, "delayed"),
        (lambda: QuantConfig(portable="yes"), TypeError, "portable"),
        (lambda: QuantConfig.from_dict([]), TypeError, "a dict"),
        (lambda: QuantConfig.from_dict({"sites": {"q": ["int8"]}}), TypeError, "site 'q'"),
        (lambda: QuantConfig.from_dict({"sites": {"q": {"fromat": "int8"}}}), ValueError,
         "fromat"),
    ],
)
def test_invalid_config_fields(call, exc, fragment):
    with pytest.raises(exc, match=fragment):
        call()


@pytest.mark.parametrize(
    "cfg, fragment",
    [
        (QuantConfig(sites={"gate": "int8", "up": "int8", "down": "int8"}),
         r"site\(s\) 'down', 'gate', 'up' that this model does not have"),
        (QuantConfig(sites={"q": "int8"}, layers={6: {"q": None}}), r"layers key 6.*\[-6, 5\]"),
        (QuantConfig(sites={"q": "int8"}, layers={-7: {"q": None}}), r"layers key -7"),
        (QuantConfig(sites={"q": "int8"}, exclude_layers=(6,)), r"exclude_layers.*6.*\[-6, 5\]"),
    ],
)
def test_config_must_fit_the_model(cfg, fragment):
    with pytest.raises(ValueError, match=fragment):
        QuantContext(cfg, n_layers=6, sites=BERT_SITES)


def test_model_site_lists():
    assert {"q.input", "attn.probs", "ffn_in"} <= set(BERT_SITES)
    assert not {"gate", "kv_cache", "lm_head"} & set(BERT_SITES)
    assert {"gate.input", "kv_cache", "lm_head"} <= set(LLAMA_SITES)
    assert set(BERT_SITES) | set(LLAMA_SITES) <= set(SITES) | set(MATMUL_SITES)
    assert set(MATMUL_SITES) <= set(LLAMA_SITES)  # attention's matmuls, Llama only
    QuantContext(QuantConfig(sites={"gate.input": "int8"}), n_layers=30, sites=LLAMA_SITES)


def test_presets_are_portable_and_negative_layer_keys_count_from_the_end():
    for name in PRESETS:  # presets name the linears of every model: each uses those it has
        QuantContext(name, n_layers=6, sites=BERT_SITES)
    ctx = QuantContext(QuantConfig(sites={"q": "int8"}, layers={-1: {"q": "mxfp4_e2m1"}}),
                       n_layers=6, sites=BERT_SITES)
    assert ctx.spec("q", 5).format.name == "float4_e2m1fn"
    assert ctx.spec("q", 4).format.name == "int8"


@pytest.mark.parametrize("suffix, text, fragment", [
    (".yaml", "sites:\n  q: int8\n", "YAML is not supported"),
    (".yml", "sites: {}\n", "YAML is not supported"),
    (".json", "{sites: }", r"not valid JSON .*line 1"),
    (".toml", "sites = [", "not valid TOML"),
    (".json", "[1, 2]", "a dict"),
])
def test_config_files_give_clear_errors(tmp_path, suffix, text, fragment):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(ValueError, match=fragment) as info:
        QuantConfig.load(path)
    assert str(path) in str(info.value)


def test_promote_every_applies_to_every_accumulator_that_has_it():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 256)).astype(np.float32)
    b = rng.standard_normal((256, 8)).astype(np.float32)
    from fpsim.quant.accumulate import qmatmul

    cfg = QuantConfig(accumulator="fp16", options={"promote_every": 32})
    got = QuantContext(cfg).matmul("q", 0, a, b)
    want = np.asarray(qmatmul(a, b, accumulator="fp16", promote_every=32), np.float32)
    np.testing.assert_array_equal(got, want)
    plain = np.asarray(qmatmul(a, b, accumulator="fp16"), np.float32)
    assert not np.array_equal(want, plain)  # the option changes the result


# ---- the seeding scheme (issue 10): child seeds per site, layer, operand and call ----------
def _sr():
    from fpsim.quant import recipe

    return recipe("int8", rounding="stochastic")


def test_an_int_rng_gives_every_site_layer_and_call_its_own_stream():
    cfg = QuantConfig(sites={"q.input": _sr(), "k.input": _sr()})
    ctx = QuantContext(cfg, rng=3)
    e_q0 = ctx.act("q.input", 0, X) - X
    e_k0 = ctx.act("k.input", 0, X) - X
    e_q1 = ctx.act("q.input", 1, X) - X
    e_q0_again = ctx.act("q.input", 0, X) - X  # the next call of the same site and layer
    for other in (e_k0, e_q1, e_q0_again):
        assert not np.array_equal(e_q0, other)
    # the same seed replays the same draws, whatever the order the sites are called in
    ctx2 = QuantContext(cfg, rng=3)
    e_k0_2 = ctx2.act("k.input", 0, X) - X
    e_q0_2 = ctx2.act("q.input", 0, X) - X
    np.testing.assert_array_equal(e_q0, e_q0_2)
    np.testing.assert_array_equal(e_k0, e_k0_2)


def test_no_rng_means_the_documented_default_seed():
    cfg = QuantConfig(sites={"q.input": _sr()})
    a = QuantContext(cfg).act("q.input", 0, X)
    b = QuantContext(cfg, rng=0).act("q.input", 0, X)
    np.testing.assert_array_equal(a, b)
    assert QuantContext(cfg).seed == 0


def test_delayed_scaling_takes_an_rng():
    from fpsim.quant import DelayedScaling

    outs = []
    for _ in range(2):
        ds = DelayedScaling(recipe_sr := _sr(), rng=11)
        outs.append([ds(X), ds(X)])
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    assert not np.array_equal(outs[0][0] - X, outs[0][1] - X) or recipe_sr is None


def test_every_preset_runs_including_the_accumulator_one():
    for name in PRESETS:
        ctx = QuantContext(name)
        ctx.calibrating = ctx.config.weight_algorithm is not None  # GPTQ/AWQ: X calibrates
        y = ctx.linear("up", 0, X, W)
        assert y.shape == (X.shape[0], W.shape[1]) and np.isfinite(y).all(), name


# ---- GPU matrix instructions as accumulators (issue 11) -------------------------------------
def _fp8_operands(k=1024):
    rng = np.random.default_rng(7)
    return (np.abs(rng.standard_normal((3, k))).astype(np.float32),
            np.abs(rng.standard_normal((k, 5))).astype(np.float32))


def test_hopper_preset_is_the_instruction_on_codes_times_scales():
    from fpsim import mma
    from fpsim.quant import quantize_tensor

    x, w = _fp8_operands()
    y = QuantContext("fp8_hopper").linear("up", 0, x, w)
    qx, qw = quantize_tensor(x, "e4m3fn"), quantize_tensor(w, "e4m3fn")
    inst = mma.instruction("Hopper", "wgmma", "m64n256k32.f32.e4m3.e4m3")
    d = mma.matmul(qx.element_values(), qw.element_values(), instruction=inst)
    want = (d.astype(np.float32) * (np.float32(qx.element_scale()[0, 0])
                                    * np.float32(qw.element_scale()[0, 0])))
    np.testing.assert_array_equal(y, want.astype(np.float32))


def test_promotion_cures_the_hopper_accumulation_error():
    x, w = _fp8_operands(4096)
    ref = x.astype(np.float64) @ w.astype(np.float64)
    err = {}
    for name in ("fp8_hopper", "fp8_hopper_promoted"):
        y = QuantContext(name).linear("up", 0, x, w)
        err[name] = float(np.max(np.abs(y - ref) / ref))
    # 13 kept bits over K = 4096 positive products: percents; promoted: E4M3 rounding only
    assert err["fp8_hopper"] > 0.02 > 0.01 > err["fp8_hopper_promoted"]


def test_deepseek_preset_applies_block_scales_at_promotion():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 384)).astype(np.float32)
    x[:, 200] *= 50  # an outlier in the second 128-block: only that block's scale grows
    w = rng.standard_normal((384, 256)).astype(np.float32) / 8
    y = QuantContext("fp8_deepseek").linear("up", 0, x, w)
    ref = x.astype(np.float64) @ w.astype(np.float64)
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 0.05


@pytest.mark.parametrize("make, exc, match", [
    (lambda: QuantConfig(accumulator="Hopper:wgmma"), ValueError, "arch:op:qualifier"),
    (lambda: QuantConfig(accumulator="Hopper:wgmma:m64n8k32.f32.e4m3.e4m4"), ValueError,
     "did you mean"),
    (lambda: QuantConfig(sites={"up": "e4m3fn", "up.input": "e4m3fn"},
                         accumulator="Hopper:wgmma:m64n8k32.f32.e4m3.e4m3",
                         options={"promote_every": 100}), ValueError, "multiple of"),
])
def test_instruction_accumulator_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_block_scales_need_promotion_and_formats_must_match():
    inst = "Hopper:wgmma:m64n8k32.f32.e4m3.e4m3"
    x, w = _fp8_operands(256)
    cfg = QuantConfig(sites={"up": "fp8_deepseek_weight", "up.input": "fp8_deepseek_activation"},
                      accumulator=inst)
    with pytest.raises(ValueError, match="promote_every"):
        QuantContext(cfg).linear("up", 0, x, w)
    cfg = QuantConfig(sites={"up": "e5m2", "up.input": "e4m3fn"}, accumulator=inst)
    with pytest.raises(ValueError, match="weight format float8_e5m2 is not the instruction's e4m3"):
        QuantContext(cfg).linear("up", 0, x, w)


def test_excluded_layers_stay_fp32_with_an_instruction_accumulator():
    cfg = QuantConfig(sites={"up": "e4m3fn", "up.input": "e4m3fn"},
                      accumulator="Hopper:wgmma:m64n8k32.f32.e4m3.e4m3", exclude_layers=(0,))
    ctx = QuantContext(cfg, n_layers=2)
    np.testing.assert_array_equal(ctx.linear("up", 0, X, W), X @ W)
    assert not np.array_equal(ctx.linear("up", 1, X, W), X @ W)
