"""fpsim.plotting: every figure renders headless, carries its labels, and rejects bad input.

Each test saves its figure to PNG and checks that the image is not blank; the import test
checks that ``import fpsim`` never pulls in matplotlib.
"""

import doctest
import os
import subprocess
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import fpsim
from fpsim import plotting
from fpsim.models import QuantContext

JIT_DISABLED = os.environ.get("NUMBA_DISABLE_JIT") == "1"
N = 512 if JIT_DISABLED else 16_384  # elements of the test tensors (a multiple of 64)
N_SAWTOOTH = 300 if JIT_DISABLED else 5_000


def _mx_kernel_runs() -> bool:
    """False while fpsim/_kernels/blocks.py calls math.ldexp(1.0, np.int32) (a TypeError
    as plain Python under NUMBA_DISABLE_JIT=1)."""
    try:
        fpsim.fake_quantize(np.ones(32, np.float32), "mxfp8_e4m3")
    except TypeError:
        return False
    return True


MX_RUNS = _mx_kernel_runs()
needs_mx = pytest.mark.xfail(not MX_RUNS, raises=TypeError, strict=False,
                             reason="MX block kernel fails as plain Python (math.ldexp of an "
                                    "np.int32 in fpsim/_kernels/blocks.py)")


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).standard_normal(N).astype(np.float32)


def _save(fig, tmp_path, name):
    """Save to PNG; assert the image exists, has a sane size and is not blank."""
    from matplotlib.image import imread

    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=60)
    assert path.stat().st_size > 5_000
    img = imread(path)
    assert img.shape[0] > 150 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # not a blank canvas
    return img


def _texts(legend):
    return [t.get_text() for t in legend.get_texts()]


# ---- import hygiene ---------------------------------------------------------------
@pytest.mark.parametrize("stmt", ["import fpsim", "import fpsim.plotting"])
def test_import_does_not_import_matplotlib(stmt):
    code = f"{stmt}, sys; assert 'matplotlib' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", f"import sys; {code}"], check=True)


def test_fpsim_does_not_expose_plotting_eagerly():
    assert "plotting" not in fpsim.__all__


# ---- number line ---------------------------------------------------------------------
def test_number_line(tmp_path):
    names = ["e4m3fn", "e5m2", "e2m3fn", "e2m1fn", "int4"]
    fig = plotting.number_line(names)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        fpsim.get_format(n).name for n in names]
    assert ax.get_xscale() == "log"
    assert "|x|" in ax.get_xlabel()
    assert _texts(ax.get_legend()) == ["normal", "subnormal", "integer"]
    _save(fig, tmp_path, "number_line")


def test_number_line_ticks_are_the_positive_values():
    fig = plotting.number_line("e2m1fn")
    lines = fig.axes[0].get_lines()
    xs = sorted(np.concatenate([ln.get_xdata() for ln in lines]).tolist())
    assert xs == [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    sub = [ln for ln in lines if ln.get_xdata().tolist() == [0.5]]
    assert len(sub) == 1  # the one subnormal is drawn on its own


def test_number_line_into_given_axes():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    assert plotting.number_line(["e4m3fn"], ax=ax) is fig


# ---- relative error sawtooth ---------------------------------------------------------
def test_relative_error(tmp_path):
    names = ["e4m3fn", "e5m2", "e2m1fn", "bfloat16"]
    fig = plotting.relative_error(names, n=N_SAWTOOTH)
    assert len(fig.axes) == len(names)
    for ax, name in zip(fig.axes, names):
        assert ax.get_yscale() == "log" and ax.get_xscale() == "log"
        assert ax.get_title(loc="left").startswith(fpsim.get_format(name).name)
    assert fig.axes[-1].get_xlabel().startswith("|x|")
    assert "relative error" in fig.get_supylabel()
    labels = _texts(fig.legends[0])
    assert any("bound" in t for t in labels)
    for word in ("underflow", "subnormal", "overflow"):
        assert any(word in t for t in labels), labels
    assert "becomes NaN" in fig.axes[0].get_title(loc="left")
    assert "becomes Inf" in fig.axes[1].get_title(loc="left")
    assert "saturates" in fig.axes[2].get_title(loc="left")
    _save(fig, tmp_path, "relative_error")


def test_relative_error_stays_under_the_bound_on_normals():
    fig = plotting.relative_error("e4m3fn", lo=1 / 32, hi=256, n=N_SAWTOOTH)
    y = fig.axes[0].get_lines()[0].get_ydata()
    assert np.nanmax(y) <= 2.0**-4
    # directed rounding: the bound doubles
    fig = plotting.relative_error("e4m3fn", lo=1 / 32, hi=256, n=N_SAWTOOTH,
                                  rounding="toward_zero")
    y = fig.axes[0].get_lines()[0].get_ydata()
    assert 2.0**-4 < np.nanmax(y) <= 2.0**-3


# ---- error histogram -----------------------------------------------------------------
def test_error_histogram(x, tmp_path):
    specs = ["e4m3fn", "e5m2", "int8", "mxfp4_e2m1", "nvfp4"]
    if not MX_RUNS:
        specs.remove("mxfp4_e2m1")
    fig = plotting.error_histogram(x, specs)
    ax = fig.axes[0]
    labels = _texts(ax.get_legend())
    assert [t.split(":")[0] for t in labels] == specs
    assert all("SQNR" in t and "dB" in t for t in labels)
    assert "absolute error" in ax.get_xlabel() and ax.get_xscale() == "log"
    assert "%" in ax.get_ylabel()
    _save(fig, tmp_path, "error_histogram")


def test_error_histogram_relative_and_quantspec(x):
    spec = fpsim.recipe("int8_channel")
    fig = plotting.error_histogram(x.reshape(-1, 64), [spec, "e4m3fn"], error="relative",
                                   bins=np.geomspace(1e-6, 1, 30))
    ax = fig.axes[0]
    assert "relative error" in ax.get_xlabel()
    assert _texts(ax.get_legend())[0].startswith("int8_channel:")


def test_error_histogram_reports_the_sqnr(x):
    fig = plotting.error_histogram(x, "int8")
    db = fpsim.metrics.sqnr_db(x, fpsim.fake_quantize(x, "int8"))
    assert f"SQNR {db:.1f} dB" in _texts(fig.axes[0].get_legend())[0]


# ---- SQNR versus scale -----------------------------------------------------------------
def test_sqnr_vs_scale(x, tmp_path):
    names = ["e4m3fn", "e5m2", "e2m1fn", "int8"]
    scales = None if not JIT_DISABLED else np.geomspace(2.0**-20, 2.0**20, 17)
    fig = plotting.sqnr_vs_scale(x, names, scales=scales)
    ax, ax2 = fig.axes
    assert ax.get_ylabel() == "SQNR (dB)"
    assert "%" in ax2.get_ylabel() and ax2.get_xlabel().startswith("scale s")
    labels = _texts(ax.get_legend())
    for n in names:
        assert fpsim.get_format(n).name in labels
    assert any("ceiling" in t for t in labels)
    # one dashed ceiling per float format, at 6.02 m + 13.5 dB
    ceilings = sorted(ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_linestyle() == "--")
    assert ceilings == pytest.approx(sorted(6.02 * m + 13.5 for m in (3, 2, 1)))
    _save(fig, tmp_path, "sqnr_vs_scale")


def test_sqnr_vs_scale_plateau_reaches_the_ceiling(x):
    scales = np.geomspace(0.5, 64, 8)  # e4m3fn's normal range for N(0, 1), no overflow
    fig = plotting.sqnr_vs_scale(x, "e4m3fn", scales=scales)
    db = fig.axes[0].get_lines()[0].get_ydata()
    assert np.all(np.abs(db - (6.02 * 3 + 13.5)) < 1.5)


# ---- layer heatmaps --------------------------------------------------------------------
@pytest.fixture(scope="module")
def traced_context():
    ctx = QuantContext("fp8_e4m3", trace=True)
    rng = np.random.default_rng(1)
    for layer in range(3):
        for site in ("q.input", "up.input"):
            ctx.quantize(site, layer, rng.standard_normal((8, 32)).astype(np.float32)
                         * 10.0 ** layer)
        ctx.weight("q", layer, rng.standard_normal((32, 32)).astype(np.float32))
    ctx.quantize("lm_head.input", None, rng.standard_normal((8, 32)).astype(np.float32))
    return ctx


def test_layer_heatmaps_from_a_trace(traced_context, tmp_path):
    fig = plotting.layer_heatmaps(traced_context.trace)
    assert len(fig.axes) == 4  # two heatmaps, two colour bars
    heat = [ax for ax in fig.axes if ax.get_images()]
    assert len(heat) == 2
    cbar_labels = {ax.get_ylabel() for ax in fig.axes if not ax.get_images()}
    assert cbar_labels == {"SQNR (dB)", "saturated (% of elements)"}
    ax = heat[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "q.input", "up.input", "q", "lm_head.input"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "-"]
    assert ax.get_xlabel().startswith("layer") and ax.get_ylabel() == "site"
    grid = ax.get_images()[0].get_array()
    st = traced_context.trace[("q.input", 1)]
    assert grid[0, 1] == pytest.approx(st.sqnr_db)
    assert np.ma.is_masked(grid[3, 0])  # lm_head has no layer 0
    _save(fig, tmp_path, "layer_heatmaps")


def test_layer_heatmaps_from_a_list_of_dicts(traced_context, tmp_path):
    rows = [dict(site=s, layer=l, **st.to_dict()) for (s, l), st in traced_context.trace.items()]
    fig = plotting.layer_heatmaps(rows, metric=("sqnr_db", "underflow_rate", "amax"))
    assert len([ax for ax in fig.axes if ax.get_images()]) == 3
    # the context itself works too, and a single metric name
    fig = plotting.layer_heatmaps(traced_context, metric="saturation_rate")
    assert len(fig.axes) == 2
    _save(fig, tmp_path, "layer_heatmaps_list")


def test_layer_heatmaps_minimal_dicts_and_infinite_sqnr():
    rows = [{"site": "q", "layer": 0, "sqnr_db": float("inf"), "saturated": 0, "elements": 10},
            {"site": "q", "layer": 1, "sqnr_db": 20.0, "saturated": 5, "elements": 10}]
    fig = plotting.layer_heatmaps(rows)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["inf", "20.0"]
    heat = [ax for ax in fig.axes if ax.get_images()]
    sat = [t.get_text() for t in heat[1].texts]
    assert sat == ["0", "50"]


# ---- MX block scales -------------------------------------------------------------------
@needs_mx
def test_mx_scale_histogram(x, tmp_path):
    rng = np.random.default_rng(2)
    t = x.reshape(-1, 64) * np.exp(rng.standard_normal((x.size // 64, 1))).astype(np.float32)
    fig = plotting.mx_scale_histogram(t, "mxfp8_e4m3")
    ax1, ax2 = fig.axes
    assert ax1.get_xlabel() == "block scale exponent (log2)"
    assert ax1.get_ylabel() == "blocks"
    assert "clipped" in ax2.get_xlabel() and ax2.get_yscale() == "log"
    assert _texts(ax1.get_legend()) == ["floor", "rceil"]
    labels = _texts(ax2.get_legend())
    assert labels[0].startswith("floor:") and labels[1].startswith("rceil: 0.0% of blocks")
    # the bars count every block once per rule
    n_blocks = t.size // 32
    for rule in range(2):
        bars = ax1.containers[rule]
        assert sum(b.get_height() for b in bars) == n_blocks
    _save(fig, tmp_path, "mx_scale_histogram")


@needs_mx
def test_mx_scale_histogram_exponents_match_mx_encode(x):
    from fpsim.quant.blocks import mx_encode

    t = x[: 32 * 8]
    fig = plotting.mx_scale_histogram(t, "mxfp4_e2m1", scale_rules="floor")
    _, sc = mx_encode(t, "float4_e2m1fn", scale_rule="floor")
    es = sc.astype(int) - 127
    bars = fig.axes[0].containers[0]
    got = {round(b.get_x() + b.get_width() / 2): b.get_height() for b in bars}
    want = {int(e): int(np.count_nonzero(es == e)) for e in np.unique(es)}
    assert {k: v for k, v in got.items() if v} == want


# ---- doctests ---------------------------------------------------------------------------
def test_doctests():
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = doctest.DocTestFinder().find(plotting)
    for t in tests:
        if MX_RUNS or not t.name.endswith("mx_scale_histogram"):
            runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 6 and result.failed == 0


# ---- invalid arguments ---------------------------------------------------------------
_X = np.ones(64, np.float32)

INVALID = [
    (plotting.number_line, ("e4m3fx",), {}, ValueError, "unknown format"),
    (plotting.number_line, ([],), {}, ValueError, "at least one format"),
    (plotting.number_line, (3,), {}, TypeError, "formats must be"),
    (plotting.number_line, ([1.5],), {}, TypeError, r"formats\[0\]"),
    (plotting.number_line, ("e4m3fn",), {"ax": "axes"}, TypeError, "ax must be"),
    (plotting.relative_error, ("e4m3fn",), {"lo": 4.0, "hi": 2.0}, ValueError, "lo must be below"),
    (plotting.relative_error, ("e4m3fn",), {"lo": -1.0}, ValueError, "lo must be a finite positive"),
    (plotting.relative_error, ("e4m3fn",), {"hi": "big"}, TypeError, "hi must be"),
    (plotting.relative_error, ("e4m3fn",), {"n": 1}, ValueError, "n must be >= 2"),
    (plotting.relative_error, ("e4m3fn",), {"n": 2.5}, TypeError, "n must be an int"),
    (plotting.relative_error, ("e4m3fn",), {"rounding": "nearest"}, ValueError, "nearest"),
    (plotting.error_histogram, (_X, "nope"), {}, ValueError, "unknown recipe"),
    (plotting.error_histogram, (_X, []), {}, ValueError, "at least one"),
    (plotting.error_histogram, (_X, [3]), {}, TypeError, r"specs\[0\]"),
    (plotting.error_histogram, (_X, "int8"), {"error": "squared"}, ValueError, "error must be"),
    (plotting.error_histogram, (_X, "int8"), {"bins": 0}, ValueError, "bins must be >= 1"),
    (plotting.error_histogram, (_X, "int8"), {"bins": [1.0, 0.5]}, ValueError, "increasing"),
    # bins is bounded (10**7 bins once ran 15 minutes at 4 GB): at most 10**5 bins
    (plotting.error_histogram, (_X, "int8"), {"bins": 10**5 + 1}, ValueError,
     r"bins must be >= 1 and <= 100000, got 100001"),
    (plotting.error_histogram, (_X, "int8"), {"bins": 10**7}, ValueError,
     r"bins must be >= 1 and <= 100000, got 10000000"),
    (plotting.error_histogram, (_X, "int8"), {"bins": np.geomspace(1e-6, 1.0, 10**5 + 2)},
     ValueError, r"bins must hold at most 100001 edges \(100000 bins\), got 100002"),
    (plotting.error_histogram, (np.zeros(4), "int8"), {}, ValueError, "non-zero"),
    (plotting.error_histogram, (np.array([], np.float32), "int8"), {}, ValueError, "empty"),
    (plotting.error_histogram, (np.array(["a"]), "int8"), {}, TypeError, "x must be"),
    (plotting.sqnr_vs_scale, (_X, "e4m3fn"), {"scales": [1.0, -1.0]}, ValueError, "scales"),
    (plotting.sqnr_vs_scale, (_X, "e4m3fn"), {"scales": [1.0]}, ValueError, "at least two"),
    (plotting.sqnr_vs_scale, (_X, "e9m9"), {}, ValueError, "unknown format"),
    (plotting.layer_heatmaps, ({},), {}, ValueError, "trace is empty"),
    (plotting.layer_heatmaps, ("trace",), {}, TypeError, "trace must be"),
    (plotting.layer_heatmaps, ([{"site": "q"}],), {}, ValueError, "'layer'"),
    (plotting.layer_heatmaps, ([{"site": "q", "layer": 0}],), {}, ValueError, "'sqnr_db'"),
    (plotting.layer_heatmaps, ([{"site": "q", "layer": 0, "sqnr_db": 1.0}] * 2,), {}, ValueError,
     "more than once"),
    (plotting.layer_heatmaps, ([{"site": "q", "layer": 0, "sqnr_db": 1.0}],),
     {"metric": "snr"}, ValueError, "metric must be among"),
    (plotting.layer_heatmaps, ([{"site": "q", "layer": 0, "sqnr_db": 1.0}],),
     {"metric": ()}, ValueError, "must not be empty"),
    (plotting.mx_scale_histogram, (_X, "nvfp4"), {}, ValueError, "power-of-two"),
    (plotting.mx_scale_histogram, (_X, "mxfp9"), {}, ValueError, "unknown recipe"),
    (plotting.mx_scale_histogram, (_X, 8), {}, TypeError, "recipe must be"),
    (plotting.mx_scale_histogram, (_X,), {"scale_rules": ("round",)}, ValueError, "scale_rules"),
]


@pytest.mark.parametrize("func, args, kwargs, exc, match", INVALID,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(INVALID)])
def test_invalid_arguments(func, args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        func(*args, **kwargs)


def test_layer_sqnr_lines(tmp_path):
    fig = plotting.layer_sqnr_lines({"int8": [60.0, 45.0, np.inf], "mxfp4": [30.0, 22.0, 19.0]})
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("layer") and len(ax.get_lines()) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["int8", "mxfp4"]
    fig.savefig(tmp_path / "l.png")
    with pytest.raises(ValueError, match="per_preset"):
        plotting.layer_sqnr_lines({})
