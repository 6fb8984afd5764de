"""The named QuantConfig presets (``fpsim eval --preset``)."""

from __future__ import annotations

import difflib

from ..quant import QuantSpec
from .config import QuantConfig

__all__ = ["PRESETS", "preset"]


def _w8a8(weight, act, linears, **kw):
    sites = {s: weight for s in linears}
    sites.update({f"{s}.input": act for s in linears})
    return dict(sites=sites, **kw)


#: Hopper's FP8 warpgroup MMA, as QuantConfig spells an instruction accumulator
HOPPER_FP8 = "Hopper:wgmma:m64n256k32.f32.e4m3.e4m3"

_LINEARS = ("q", "k", "v", "o", "gate", "up", "down", "ffn_in", "ffn_out", "lm_head")

#: attention probabilities (exp(s - rowmax), in (0, 1]) cast to E4M3 with scale 1, as
#: FlashAttention-3 does
_PROBS_E4M3 = QuantSpec(format="float8_e4m3fn", amax=448.0)

PRESETS: dict[str, dict] = {
    "fp32": dict(description="no quantization (the reference)"),
    "bf16": dict(**_w8a8("bfloat16", "bfloat16", _LINEARS),
                 description="weights and linear inputs cast to bfloat16 (plain cast)"),
    "fp16": dict(**_w8a8("float16", "float16", _LINEARS),
                 description="weights and linear inputs cast to float16 (plain cast)"),
    "fp8_e4m3": dict(**_w8a8("float8_e4m3fn", "float8_e4m3fn", _LINEARS),
                     description="FP8 E4M3 W8A8, per-tensor dynamic amax scaling"),
    "fp8_e5m2": dict(**_w8a8("float8_e5m2", "float8_e5m2", _LINEARS),
                     description="FP8 E5M2 W8A8, per-tensor dynamic amax scaling"),
    "fp8_deepseek": dict(**_w8a8("fp8_deepseek_weight", "fp8_deepseek_activation", _LINEARS),
                         accumulator=HOPPER_FP8, options=dict(promote_every=128),
                         description="DeepSeek-V3 FP8: 128x128 weight blocks, 1x128 activation "
                                     "tiles, Hopper wgmma FP8 accumulation (bit-exact, "
                                     "fpsim.mma) promoted to FP32 with the block scales every "
                                     "128"),
    "fp8_hopper": dict(**_w8a8("float8_e4m3fn", "float8_e4m3fn", _LINEARS),
                       accumulator=HOPPER_FP8,
                       description="FP8 E4M3 W8A8 per-tensor scales on Hopper's wgmma (13 kept "
                                   "bits, E8M13 accumulator: bit-exact, fpsim.mma), no "
                                   "promotion"),
    "fp8_hopper_promoted": dict(**_w8a8("float8_e4m3fn", "float8_e4m3fn", _LINEARS),
                                accumulator=HOPPER_FP8, options=dict(promote_every=128),
                                description="fp8_hopper with FP32 promotion every 128 products "
                                            "(DeepSeek-V3, FlashAttention-3)"),
    "fp8_attention_hopper": dict(
        sites={**{s: "float8_e4m3fn" for s in ("attn.q", "attn.k", "attn.v")},
               "attn.probs": _PROBS_E4M3},
        accumulators={"attn.qk": HOPPER_FP8, "attn.pv": HOPPER_FP8},
        description="FP8 attention as FlashAttention-3 runs it on Hopper: Q, K, V in E4M3 "
                    "with per-tensor scales, the softmax probabilities cast to E4M3, QK^T and "
                    "PV on wgmma (E8M13 accumulator, bit-exact); linears in FP32"),
    "fp8_attention_hopper_promoted": dict(
        sites={**{s: "float8_e4m3fn" for s in ("attn.q", "attn.k", "attn.v")},
               "attn.probs": _PROBS_E4M3},
        accumulators={"attn.qk": HOPPER_FP8, "attn.pv": HOPPER_FP8},
        options=dict(promote_every=128),
        description="fp8_attention_hopper with PV's partial sums promoted to FP32 every 128 "
                    "keys (two-level accumulation)"),
    "fp8_e4m3_delayed": dict(**_w8a8("float8_e4m3fn", "float8_e4m3fn", _LINEARS),
                             delayed=dict(history_len=16, algo="max", margin=0),
                             description="FP8 E4M3 W8A8, Transformer Engine delayed scaling of "
                                         "activations (amax history 16, max, margin 0); "
                                         "per-tensor weights"),
    "llm_int8": dict(linear_mode="llm_int8", options=dict(threshold=6.0),
                     sites={s: "int8" for s in _LINEARS},
                     description="LLM.int8(): vector-wise INT8 with feature columns holding "
                                 "|x| >= 6 kept in float16"),
    "smoothquant": dict(linear_mode="smoothquant", options=dict(alpha=0.5),
                        sites={s: "int8" for s in _LINEARS},
                        description="SmoothQuant (alpha 0.5, smoothing from each call's "
                                    "activations) with per-token INT8 activations and "
                                    "per-channel INT8 weights"),
    "torch_dynamic_int8": dict(linear_mode="torch_dynamic_int8",
                               sites={s: "int8" for s in _LINEARS},
                               description="torch.ao.quantization.quantize_dynamic on Linear "
                                           "layers: per-tensor symmetric int8 weights (scale "
                                           "amax/127.5), activations per call per tensor affine "
                                           "uint8 with reduce_range (0..127), int32 "
                                           "accumulation, float output"),
    "int8": dict(**_w8a8("int8_weight_channel", "int8_token", _LINEARS),
                 description="INT8 W8A8: per-channel weights, per-token activations"),
    "int8_tensor": dict(**_w8a8("int8", "int8", _LINEARS),
                        description="INT8 W8A8, per-tensor weights and activations"),
    "int8_weight_only": dict(sites={s: "int8_weight_channel" for s in _LINEARS},
                             description="INT8 per-channel weights, FP32 activations"),
    "mxfp8": dict(**_w8a8("mxfp8_e4m3", "mxfp8_e4m3", _LINEARS),
                  description="OCP MXFP8 (E4M3, k=32, floor scale rule) weights and activations"),
    "mxfp6": dict(**_w8a8("mxfp6_e2m3", "mxfp6_e2m3", _LINEARS),
                  description="OCP MXFP6 (E2M3) weights and activations"),
    "mxfp4": dict(**_w8a8("mxfp4_e2m1", "mxfp4_e2m1", _LINEARS),
                  description="OCP MXFP4 (E2M1) weights and activations"),
    "nvfp4": dict(**_w8a8("nvfp4", "nvfp4", _LINEARS),
                  description="NVFP4: E2M1, E4M3 scale per 16, FP32 tensor scale"),
    # llama.cpp's block formats, weight-only (embedding and tied lm_head in FP32):
    # what `fpsim export` writes into a GGUF file
    **{f"gguf_{t}": dict(sites={s: f"ggml_{t}" for s in _LINEARS if s != "lm_head"},
                         description=f"llama.cpp {t.upper()} weights (ggml_{t}), "
                                     "activations FP32")
       for t in ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "mxfp4")},
    "gguf_q4_0_gptq": dict(sites={s: "ggml_q4_0" for s in _LINEARS if s != "lm_head"},
                           weight_algorithm="gptq", options=dict(act_order=True),
                           description="llama.cpp Q4_0 weights by GPTQ (act_order), calibrated "
                                       "on held-out shipped text; activations FP32"),
    # weight-only INT4 with groups of 128 inputs, the GPTQ/AWQ papers' setting (lm_head kept)
    "int4_g128": dict(sites={s: "int4_block128" for s in _LINEARS if s != "lm_head"},
                      description="INT4 weights, one scale per 128 inputs, rounded to nearest "
                                  "(W4A16 g128)"),
    "int4_g128_gptq": dict(sites={s: "int4_block128" for s in _LINEARS if s != "lm_head"},
                           weight_algorithm="gptq", options=dict(act_order=True),
                           description="INT4 g128 weights by GPTQ (act_order, damp 0.01), "
                                       "calibrated on held-out shipped text"),
    "int4_g128_awq": dict(sites={s: "int4_block128" for s in _LINEARS if s != "lm_head"},
                          weight_algorithm="awq",
                          description="INT4 g128 weights by AWQ (scale and clip search), "
                                      "calibrated on held-out shipped text"),
}


def preset(name: str) -> QuantConfig:
    """The QuantConfig of a named preset (see :data:`PRESETS`).

    Examples
    --------
    >>> preset("int8").spec_for("up.input", 3).granularity
    'token'
    """
    if isinstance(name, QuantConfig):
        return name
    if not isinstance(name, str):
        raise TypeError(f"quant must be a QuantConfig, a preset name or None, got {type(name).__name__}")
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown preset {name!r}{hint}; presets: {', '.join(PRESETS)}")
    kw = dict(PRESETS[name])
    return QuantConfig(name=name, portable=True, **kw)
