"""AWQ: the scale search's grid and normalisation, never worse than round-to-nearest on its own
objective, the clip search, and bad arguments."""

import numpy as np
import pytest

import fpsim
from fpsim.quant.awq import awq
from fpsim.quant.spec import resolve_spec

SPECS = [
    ("int4_block32", dict(axis=0, block_size=64)),
    ("int4_block32", dict(axis=0, format="uint4", symmetric=False)),
    ("int8_channel", dict(axis=0)),
    ("mxfp4_e2m1", dict(axis=0)),
    ("nvfp4", dict(axis=0)),
    ("e4m3fn", {}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in SPECS]


def _problem(seed=0, K=128, N=64, T=512):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, K)) * np.exp(1.5 * rng.standard_normal(K))  # salient channels
    w = rng.standard_normal((K, N)).astype(np.float32)
    return x, w


def _err(x, w, v):
    return np.mean((x @ w.astype(np.float64) - x @ v.astype(np.float64)) ** 2)


@pytest.mark.parametrize("name, kw", SPECS, ids=IDS)
def test_alpha_zero_is_round_to_nearest_and_the_best_alpha_wins(name, kw):
    x, w = _problem()
    spec = resolve_spec(name, **kw)
    res = awq(w, x, spec, clip=False)
    rtn = fpsim.fake_quantize(w, spec)
    # alpha = 0 gives s = 1: the first loss is round-to-nearest's output error
    assert res.losses[0] == pytest.approx(_err(x, w, rtn), rel=1e-4)
    assert res.alpha == np.argmin(res.losses) / len(res.losses)
    assert np.min(res.losses) <= res.losses[0]
    # the result is the winning alpha's: (x / s) @ Q(s w)
    s = res.scales.astype(np.float64)
    got = np.mean((x @ w.astype(np.float64)
                   - (x / s) @ res.quantized.dequantize(np.float64)) ** 2)
    assert got == pytest.approx(np.min(res.losses), rel=1e-4)  # the search multiplies in float32


@pytest.mark.parametrize("name, kw", SPECS, ids=IDS)
def test_scales_are_normalised_powers_of_the_activation_magnitude(name, kw):
    x, w = _problem(seed=1)
    res = awq(w, x, resolve_spec(name, **kw), clip=False)
    s = res.scales.astype(np.float64)
    assert np.all(s > 0)
    assert np.sqrt(s.max() * s.min()) == pytest.approx(1.0, rel=1e-6)
    if res.alpha > 0:  # s is monotone in the channel's mean |x|
        m = np.abs(x).mean(axis=0)
        order = np.argsort(m)
        assert np.all(np.diff(s[order]) >= -1e-6 * s.max())


@pytest.mark.parametrize("name, kw", SPECS, ids=IDS)
def test_clipping_never_hurts_its_objective(name, kw):
    """The clip search includes ratio 1 (no clip) for every group and output channel."""
    x, w = _problem(seed=2)
    spec = resolve_spec(name, **kw)
    a = awq(w, x, spec, clip=False)
    b = awq(w, x, spec, clip=True)
    assert np.array_equal(a.scales, b.scales)
    s = a.scales.astype(np.float64)
    err = lambda r: np.mean((x @ w.astype(np.float64)  # noqa: E731
                             - (x / s) @ r.quantized.dequantize(np.float64)) ** 2)
    if b.clip is None:
        assert spec.granularity == "tensor"
    else:
        assert np.all((0.5 < b.clip) & (b.clip <= 1.0))
        # the group-wise choice minimises each group's partial error, not the sum's cross
        # terms: allow a little
        assert err(b) <= err(a) * 1.02


def test_awq_beats_round_to_nearest_on_salient_channels():
    x, w = _problem(seed=3)
    spec = resolve_spec("int4_block32", axis=0, block_size=128)
    res = awq(w, x, spec)
    rtn = fpsim.fake_quantize(w, spec)
    assert _err(x, w, res.weight()) < 0.7 * _err(x, w, rtn)


def test_activation_recipe_is_applied_to_the_scaled_input():
    x, w = _problem(seed=4)
    spec = resolve_spec("int4_block32", axis=0)
    a = awq(w, x, spec, act_spec="int8_token", clip=False)
    b = awq(w, x, spec, clip=False)
    assert not np.array_equal(a.losses, b.losses)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(w=np.zeros(4, np.float32)), TypeError, "2-D float"),
    (dict(x=np.ones((5, 3))), ValueError, r"\(\.\.\., 8\)"),
    (dict(x=np.ones((0, 8))), ValueError, "calibration inputs"),
    (dict(x=np.full((5, 8), np.inf)), ValueError, "finite"),
    (dict(n_grid=0), ValueError, "n_grid"),
    (dict(spec=resolve_spec("int4_block32")), ValueError, "axis=0"),
    (dict(spec="nvfp4_te"), ValueError, "stack"),
])
def test_bad_arguments(kwargs, err, match):
    args = dict(w=np.ones((8, 4), np.float32), x=np.ones((5, 8)),
                spec=resolve_spec("int8_channel", axis=0))
    args.update(kwargs)
    w, x, spec = args.pop("w"), args.pop("x"), args.pop("spec")
    with pytest.raises(err, match=match):
        awq(w, x, spec, **args)
