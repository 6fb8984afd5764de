"""Figures: number lines, error sawtooths, error histograms, SQNR versus scale, per-layer
heatmaps and MX block-scale histograms.

The only module of fpsim that uses matplotlib, and it imports it lazily, inside each
function: ``import fpsim`` (and ``import fpsim.plotting``) never imports matplotlib.  Install
it with ``pip install 'fpsim[plot]'``.

Every function takes arrays or results and returns a :class:`matplotlib.figure.Figure`
built without pyplot, so it works headless (no display, no backend to choose) and keeps
no global state.  Save it with ``fig.savefig("out.png")``; in a notebook, display it by
leaving ``fig`` as the last expression of a cell (after ``%matplotlib inline``).

Colours are the Okabe-Ito colour-blind-safe palette; layouts are constrained.
"""

from __future__ import annotations

import contextlib
import math
import numbers

import numpy as np

from .formats import FloatFormat, IntFormat, get_format

__all__ = [
    "HEATMAP_METRICS",
    "PALETTE",
    "error_histogram",
    "layer_heatmaps",
    "layer_sqnr_lines",
    "mx_scale_histogram",
    "number_line",
    "qat_loss_curve",
    "relative_error",
    "sqnr_vs_scale",
]

#: Okabe & Ito's colour-blind-safe palette (yellow last: it is faint on white).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000",
           "#F0E442")

#: Metrics :func:`layer_heatmaps` can draw, with their colour-bar labels.
HEATMAP_METRICS = {
    "sqnr_db": "SQNR (dB)",
    "saturation_rate": "saturated (% of elements)",
    "underflow_rate": "underflowed to 0 (% of elements)",
    "amax": "amax (max |x|, log scale)",
}

_RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "legend.framealpha": 0.9,
}

#: Most bins :func:`error_histogram` draws: 10**7 bins once took 15 minutes and 4 GB, while
#: a figure a few thousand pixels wide cannot show more than a few thousand bins anyway.
_MAX_BINS = 10**5

# region shading of relative_error
_UNDERFLOW = {"color": "#999999", "alpha": 0.35, "lw": 0}
_SUBNORMAL = {"color": "#E69F00", "alpha": 0.18, "lw": 0}
_OVERFLOW = {"color": "#CC79A7", "alpha": 0.3, "lw": 0}


# ---- matplotlib, lazily --------------------------------------------------------------
def _mpl():
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(
            "fpsim.plotting needs matplotlib; install it with pip install 'fpsim[plot]'"
        ) from e
    return matplotlib


@contextlib.contextmanager
def _style():
    """fpsim's rc settings while a figure is built (restored afterwards)."""
    mpl = _mpl()
    from cycler import cycler

    with mpl.rc_context({**_RC, "axes.prop_cycle": cycler(color=PALETTE)}):
        yield mpl


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _check_ax(ax):
    if ax is None:
        return None
    from matplotlib.axes import Axes

    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
    return ax


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _log2_axis(axis):
    """At most ~10 labelled powers of two on an axis already on a base-2 log scale."""
    from matplotlib.ticker import LogLocator, NullLocator

    axis.set_major_locator(LogLocator(base=2, numticks=10))
    axis.set_minor_locator(NullLocator())


# ---- argument checking -------------------------------------------------------------
def _formats_arg(formats, name: str = "formats") -> list:
    if isinstance(formats, (str, FloatFormat, IntFormat)):
        formats = [formats]
    try:
        items = list(formats)
    except TypeError:
        raise TypeError(
            f"{name} must be a format name, a format, or a list of them; "
            f"got {type(formats).__name__}") from None
    if not items:
        raise ValueError(f"{name} must name at least one format, got an empty list")
    out = []
    for i, f in enumerate(items):
        if not isinstance(f, (str, FloatFormat, IntFormat)):
            raise TypeError(f"{name}[{i}] must be a format name or a FloatFormat/IntFormat, "
                            f"got {type(f).__name__}")
        out.append(get_format(f))  # an unknown name raises fpsim's ValueError
    return out


def _array_arg(x, name: str = "x") -> np.ndarray:
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be an array of floats, got a bool")
    arr = np.asarray(x)
    if arr.dtype.kind in "iu" and arr.dtype != np.bool_:
        arr = arr.astype(np.float64)
    elif arr.dtype.kind == "V" or arr.dtype.name.startswith(("float8", "float6", "float4",
                                                             "bfloat16")):
        try:  # ml_dtypes arrays widen exactly to float32
            arr = arr.astype(np.float32)
        except (TypeError, ValueError):
            pass
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must be an array of floats, got dtype {arr.dtype}")
    if arr.dtype not in (np.float16, np.float32, np.float64):
        arr = arr.astype(np.float64)
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    finite = arr[np.isfinite(arr)]
    if not np.any(finite != 0):
        raise ValueError(f"{name} must hold at least one finite non-zero value")
    return arr


def _int_arg(v, name: str, minimum: int) -> int:
    if not isinstance(v, (numbers.Integral,)) or isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return int(v)


def _positive_arg(v, name: str):
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a positive float or None, got {type(v).__name__}")
    v = float(v)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite positive number, got {v}")
    return v


def _names_arg(value, name: str, allowed) -> tuple:
    if isinstance(value, str):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a string or a tuple of strings, "
                        f"got {type(value).__name__}") from None
    if not items:
        raise ValueError(f"{name} must not be empty; choose from {', '.join(allowed)}")
    for v in items:
        if v not in allowed:
            import difflib

            close = difflib.get_close_matches(str(v), list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{name} must be among {', '.join(allowed)}, got {v!r}{hint}")
    return items


# ---- small helpers --------------------------------------------------------------------
def _positive_values(fmt) -> tuple[np.ndarray, np.ndarray]:
    """Positive finite values of fmt (sorted) and their class ('normal', 'subnormal' or
    'integer')."""
    vals = fmt.values()
    if isinstance(fmt, FloatFormat):
        cls = fmt.classify()
    else:
        cls = np.full(vals.shape, "integer", dtype=object)
    sel = np.isfinite(vals) & (vals > 0)
    vals, cls = vals[sel], cls[sel]
    order = np.argsort(vals, kind="stable")
    vals, cls = vals[order], cls[order]
    keep = np.concatenate([[True], vals[1:] != vals[:-1]])
    return vals[keep], cls[keep]


def _pow2_label(v: float) -> str:
    """'2^k' in mathtext for powers of two far from 1, else a short decimal."""
    m, e = math.frexp(v)
    if m == 0.5 and abs(e - 1) >= 5 and not (v.is_integer() and v < 1e6):
        return rf"$2^{{{e - 1}}}$"
    return _num(v)


def _num(v: float) -> str:
    """Integers below a million in full, other numbers to 4 significant digits."""
    v = float(v)
    return f"{v:.0f}" if v.is_integer() and abs(v) < 1e6 else f"{v:.4g}"


def _mantissa_bits(fmt):
    return fmt.mantissa_bits if isinstance(fmt, FloatFormat) else None


def _ceiling_db(fmt) -> float | None:
    """6.02 m + 13.5 dB for a float with m mantissa bits (no over/underflow)."""
    m = _mantissa_bits(fmt)
    return None if m is None else 6.02 * m + 13.5


def _overflow_word(fmt, saturate: bool) -> str:
    if saturate or isinstance(fmt, IntFormat) or not (fmt.has_inf or fmt.has_nan):
        return "saturates to max"
    return "becomes Inf" if fmt.has_inf else "becomes NaN"


def _spec_label(spec, resolved) -> str:
    if isinstance(spec, str):
        return spec
    return resolved.name or resolved.describe()


def _heat_text_color(cmap, norm, v) -> str:
    r, g, b, _ = cmap(norm(v))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


# ---- 1. number line ----------------------------------------------------------------
def number_line(formats, *, ax=None):
    """Where a format's values lie: one row of ticks per format on a log2 axis.

    Each positive finite value is a tick (negative values mirror them; 0 is not shown on a
    log axis), coloured by class: normal, subnormal, or integer for integer formats.  The
    smallest and largest values are written at the ends of each row.

    Parameters
    ----------
    formats : str, format, or list of them
        Format names (``"e4m3fn"``, ``"float6_e2m3fn"``, ``"int8"``...) or format objects,
        drawn top to bottom on one shared axis.
    ax : matplotlib.axes.Axes, optional
        Axes to draw into; by default a new figure is made.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        Unknown format name, or an empty list.
    TypeError
        ``formats`` or ``ax`` of the wrong type.

    Examples
    --------
    >>> fig = number_line(["e4m3fn", "e5m2"])
    >>> len(fig.axes), [t.get_text() for t in fig.axes[0].get_yticklabels()]
    (1, ['float8_e4m3fn', 'float8_e5m2'])
    """
    fmts = _formats_arg(formats)
    ax = _check_ax(ax)
    with _style():
        own = ax is None
        if own:
            fig = _new_figure(8.0, 1.6 + 0.55 * len(fmts))
            ax = fig.add_subplot()
        fig = ax.figure
        colors = {"normal": PALETTE[0], "subnormal": PALETTE[3], "integer": PALETTE[2]}
        seen = {}
        lo, hi = np.inf, 0.0
        for row, fmt in enumerate(fmts):
            vals, cls = _positive_values(fmt)
            for kind in ("normal", "subnormal", "integer"):
                v = vals[cls == kind]
                if v.size == 0:
                    continue
                (line,) = ax.plot(v, np.full(v.size, row), linestyle="none", marker="|",
                                  markersize=13, markeredgewidth=0.8 if v.size < 2000 else 0.4,
                                  color=colors[kind])
                seen.setdefault(kind, line)
            lo, hi = min(lo, vals[0]), max(hi, vals[-1])
            ax.annotate(_pow2_label(vals[0]), (vals[0], row), xytext=(-7, 0),
                        textcoords="offset points", ha="right", va="center", fontsize=8)
            ax.annotate(_pow2_label(vals[-1]), (vals[-1], row), xytext=(7, 0),
                        textcoords="offset points", ha="left", va="center", fontsize=8)
        ax.set_xscale("log", base=2)
        _log2_axis(ax.xaxis)
        span = math.log2(hi) - math.log2(lo)
        pad = 0.14 * span + 1.5
        ax.set_xlim(2.0 ** (math.log2(lo) - pad), 2.0 ** (math.log2(hi) + pad))
        ax.set_ylim(len(fmts) - 0.5, -0.5)
        ax.set_yticks(range(len(fmts)), [f.name for f in fmts])
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("|x|: positive representable values (log scale; negatives mirror them)")
        kinds = [k for k in ("normal", "subnormal", "integer") if k in seen]
        title = "Number line" if len(fmts) == 1 else "Number lines"
        if own:  # the legend in one row between the title and the axes
            fig.suptitle(title)
            ax.legend([seen[k] for k in kinds], kinds, loc="lower center",
                      bbox_to_anchor=(0.5, 1.0), ncols=len(kinds), frameon=False,
                      borderaxespad=1.6)
        else:
            ax.set_title(title)
            ax.legend([seen[k] for k in kinds], kinds, loc="best")
    return fig


# ---- 2. relative error sawtooth -----------------------------------------------------
def relative_error(formats, *, lo=None, hi=None, n=20_000, rounding="nearest_even",
                   saturate=False, rng=None):
    """The rounding-error sawtooth: ``|q(x) - x| / |x|`` against ``|x|`` on log axes.

    One panel per format, from below its smallest value to above its largest.  Shaded:
    where ``x`` underflows to 0 (grey), the subnormal range (orange) and ``x > max``
    (purple; the title says whether such values saturate or become Inf/NaN, which are
    not drawn).  A dashed line marks the bound on the normal range of a float with ``m``
    mantissa bits: the unit roundoff ``2**-(m+1)`` under round-to-nearest, ``2**-m``
    under the other modes.

    Parameters
    ----------
    formats : str, format, or list of them
    lo, hi : float, optional
        Input range (positive).  Default: each format's smallest positive value / 8 to
        its max * 8.
    n : int
        Points per panel, log-spaced (default 20 000).
    rounding : str
        Rounding mode (``fpsim.ROUNDINGS``).
    saturate : bool
        Clamp overflow to +-max (then its error is drawn) instead of Inf/NaN.
    rng : seed or numpy.random.Generator
        For ``rounding="stochastic"``.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per format.

    Raises
    ------
    ValueError
        Unknown format or rounding name; ``lo``/``hi`` not positive or ``lo >= hi``;
        ``n < 2``.
    TypeError
        Arguments of the wrong type.

    Examples
    --------
    >>> fig = relative_error(["e4m3fn", "e2m1fn"], n=200)
    >>> len(fig.axes), fig.axes[0].get_yscale()
    (2, 'log')
    """
    from .measure import cast_relative_error

    fmts = _formats_arg(formats)
    lo, hi = _positive_arg(lo, "lo"), _positive_arg(hi, "hi")
    if lo is not None and hi is not None and lo >= hi:
        raise ValueError(f"lo must be below hi, got lo={lo}, hi={hi}")
    n = _int_arg(n, "n", 2)
    nearest = isinstance(rounding, str) and rounding.startswith("nearest")
    with _style():
        fig = _new_figure(8.0, 0.9 + 2.0 * len(fmts))
        axes = fig.subplots(len(fmts), 1, squeeze=False)[:, 0]
        have = set()
        for i, (fmt, ax) in enumerate(zip(fmts, axes)):
            vals, _ = _positive_values(fmt)
            a = lo if lo is not None else vals[0] / 8
            b = hi if hi is not None else vals[-1] * 8
            if a >= b:
                raise ValueError(f"lo must be below hi, got lo={a}, hi={b} for {fmt.name}")
            x = np.geomspace(a, b, n)
            q, rel = cast_relative_error(x, fmt, rounding=rounding, saturate=saturate, rng=rng)
            pos = rel[rel > 0]
            # regions
            found = set()
            zero = np.flatnonzero(q == 0)
            if zero.size and zero[0] == 0:
                last = zero[-1] if np.all(np.diff(zero) == 1) else np.flatnonzero(
                    np.diff(zero) != 1)[0]
                edge = math.sqrt(x[last] * x[min(last + 1, n - 1)])
                ax.axvspan(a, edge, **_UNDERFLOW)
                found.add("underflow")
            if isinstance(fmt, FloatFormat) and fmt.smallest_subnormal < fmt.smallest_normal:
                s0 = edge if "underflow" in found else max(a, fmt.smallest_subnormal / 2)
                s1 = min(b, fmt.smallest_normal)
                if s0 < s1:
                    ax.axvspan(s0, s1, **_SUBNORMAL)
                    found.add("subnormal")
            if b > fmt.max:
                ax.axvspan(max(a, fmt.max), b, **_OVERFLOW)
                found.add("overflow")
            have |= found
            ax.plot(x, np.where(rel > 0, rel, np.nan), color=_color(i), lw=0.7)
            m = _mantissa_bits(fmt)
            title = fmt.name
            if m is not None:
                k = m + 1 if nearest else m
                ax.axhline(2.0 ** -k, color="black", ls="--", lw=1)
                have.add("u")
                title += (rf":  {m} mantissa bit{'' if m == 1 else 's'},  bound on normals"
                          rf" $2^{{{-k}}}$")
            if b > fmt.max:
                title += f";  |x| > max = {_num(fmt.max)} {_overflow_word(fmt, saturate)}"
            ax.set_title(title, loc="left", fontsize=10)
            ax.set_xscale("log", base=2)
            _log2_axis(ax.xaxis)
            ax.set_xlim(a, b)
            ax.set_yscale("log")
            if pos.size:
                bottom = 10.0 ** math.floor(math.log10(np.percentile(pos, 1)))
                top = max(2.0, float(np.nanmax(rel)) * 1.5)
                ax.set_ylim(bottom, top)
        axes[-1].set_xlabel("|x| (input magnitude, log scale)")
        fig.supylabel("relative error |q(x) − x| / |x|", fontsize=10)
        handles = _region_handles(have, nearest)
        if handles:
            fig.legend(handles=handles, loc="outside lower center", ncols=len(handles),
                       frameon=False)
        fig.suptitle(f"Relative rounding error ({rounding})")
    return fig


def _region_handles(have, nearest: bool) -> list:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    out = []
    if "u" in have:
        label = (r"error bound on normals, $2^{-(m+1)}$" if nearest
                 else r"error bound on normals, $2^{-m}$")
        out.append(Line2D([], [], color="black", ls="--", lw=1, label=label))
    if "underflow" in have:
        out.append(Patch(label="underflow (rounds to 0)", **_UNDERFLOW))
    if "subnormal" in have:
        out.append(Patch(label="subnormal range", **_SUBNORMAL))
    if "overflow" in have:
        out.append(Patch(label="overflow (|x| > max)", **_OVERFLOW))
    return out


# ---- 3. error histograms ------------------------------------------------------------
def error_histogram(x, specs, *, bins=80, error="absolute", rng=None):
    """Histograms of the error when ``x`` is quantized with several formats or recipes.

    Each spec goes through :func:`fpsim.fake_quantize` (a format name there means
    per-tensor amax scaling into that format; recipes such as ``"mxfp4_e2m1"`` or
    ``"nvfp4"`` bring their block scales).  The error of every element is binned on a
    log axis, one step histogram per spec; elements quantized exactly (error 0) cannot be
    placed on a log axis: the legend gives their share (when at least 0.01%) and the SQNR.

    Parameters
    ----------
    x : array_like of float
        The tensor (non-finite values are ignored in the statistics).
    specs : str, QuantSpec, or list of them
        Format or recipe names, or :class:`fpsim.QuantSpec` objects.
    bins : int or array_like
        Number of log-spaced bins spanning all histograms (1 to 100000), or their edges
        (positive, increasing, at most 100001 of them).
    error : {"absolute", "relative"}
        ``|x_hat - x|`` in the units of ``x``, or ``|x_hat - x| / |x|`` (over ``x != 0``).
    rng : seed or numpy.random.Generator
        For stochastic rounding.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        Unknown format or recipe; empty ``specs``; ``x`` without finite non-zero values;
        bad ``bins`` or ``error``.
    TypeError
        Arguments of the wrong type.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal(256).astype(np.float32)
    >>> fig = error_histogram(x, ["e4m3fn", "int8"])
    >>> len(fig.axes[0].get_legend().get_texts())
    2
    """
    from .measure import is_recipe_arg, recipe_errors, resolve_recipe

    x = _array_arg(x)
    if is_recipe_arg(specs):
        specs = [specs]
    try:
        specs = list(specs)
    except TypeError:
        raise TypeError("specs must be a format/recipe name, a QuantSpec, or a list of "
                        f"them; got {type(specs).__name__}") from None
    if not specs:
        raise ValueError("specs must hold at least one format, recipe or QuantSpec")
    for i, s in enumerate(specs):
        if not is_recipe_arg(s):
            raise TypeError(f"specs[{i}] must be a format/recipe name or a QuantSpec, "
                            f"got {type(s).__name__}")
    if error not in ("absolute", "relative"):
        raise ValueError(f"error must be 'absolute' or 'relative', got {error!r}")
    if isinstance(bins, (bool, np.bool_)):
        raise TypeError("bins must be an int or an array of bin edges, got a bool")
    if isinstance(bins, numbers.Integral):
        if not 1 <= bins <= _MAX_BINS:
            raise ValueError(f"bins must be >= 1 and <= {_MAX_BINS}, got {bins}")
        edges = None
    else:
        edges = np.asarray(bins, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)) \
                or np.any(edges <= 0) or np.any(np.diff(edges) <= 0):
            raise ValueError("bins must be an int >= 1 or at least two positive, increasing, "
                             "finite bin edges")
        if edges.size > _MAX_BINS + 1:
            raise ValueError(f"bins must hold at most {_MAX_BINS + 1} edges ({_MAX_BINS} bins), "
                             f"got {edges.size}")

    resolved = [resolve_recipe(s) for s in specs]  # unknown names raise here, before work
    results = []
    for s, r in zip(specs, resolved):
        res = recipe_errors(x, r, error=error, rng=rng)
        results.append((_spec_label(s, r), res.errors, res.sqnr_db, res.non_finite))
    positive = [e[e > 0] for _, e, _, _ in results]
    if edges is None:
        allpos = np.concatenate(positive)
        if allpos.size == 0:
            a, b = 1e-8, 1.0
        else:
            a, b = float(allpos.min()), float(allpos.max())
            if a == b:
                a, b = a / 2, b * 2
        edges = np.geomspace(a, b * (1 + 1e-9), bins + 1)

    with _style():
        fig = _new_figure(7.5, 4.6)
        ax = fig.add_subplot()
        for i, ((label, e, db, nonfinite), p) in enumerate(zip(results, positive)):
            total = max(e.size, 1)
            exact = 100.0 * (e.size - p.size) / total
            text = f"{label}: SQNR {db:.1f} dB"
            if exact >= 0.01:
                text += f", {exact:.2g}% exact"
            if nonfinite:
                text += f", {nonfinite} non-finite"
            ax.hist(p, bins=edges, weights=np.full(p.size, 100.0 / total), histtype="step",
                    lw=1.6, color=_color(i), label=text)
        ax.set_xscale("log")
        if error == "absolute":
            ax.set_xlabel("absolute error |x̂ − x| (units of x, log scale)")
        else:
            ax.set_xlabel("relative error |x̂ − x| / |x| (log scale)")
        ax.set_ylabel("elements per bin (%)")
        x64 = x.astype(np.float64)
        finite = x64[np.isfinite(x64)]
        ax.set_title(f"Quantization error of {finite.size:,} values "
                     f"(rms {np.sqrt(np.mean(finite ** 2)):.3g}, amax "
                     f"{np.max(np.abs(finite)):.3g})")
        ax.legend(loc="upper left")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.35)  # room for the legend
    return fig


# ---- 4. SQNR versus scale -----------------------------------------------------------
def sqnr_vs_scale(x, formats, *, scales=None, saturate=True, rounding="nearest_even"):
    """SQNR of ``quantize(x * s) / s`` against the scale ``s``: why scaling matters.

    Top panel: SQNR per format, with its ceiling ``6.02 m + 13.5`` dB (dashed, float
    formats with ``m`` mantissa bits) and a triangle at the amax scale
    ``s = max / max|x|``.  Bottom panel: the share of elements that overflow
    (``|x s| > max``, solid) and that underflow to 0 (dotted): the SQNR falls off the
    ceiling where either grows.

    Parameters
    ----------
    x : array_like of float
    formats : str, format, or list of them
    scales : array_like, optional
        Positive scales.  Default: 241 log-spaced scales from where the tensor's rms
        underflows in every format to where it overflows in every format.
    saturate : bool
        Clamp overflow to +-max (default).  With False, overflow gives Inf/NaN and a
        gap in the SQNR curve.
    rounding : str
        Rounding mode.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes: SQNR (dB) and the overflow/underflow shares (%).

    Raises
    ------
    ValueError
        Unknown format or rounding; bad ``scales``; ``x`` without finite non-zero values.
    TypeError
        Arguments of the wrong type.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal(256)
    >>> fig = sqnr_vs_scale(x, ["e4m3fn", "int8"], scales=np.logspace(-3, 3, 13))
    >>> fig.axes[0].get_ylabel()
    'SQNR (dB)'
    """
    from .measure import scale_sweep

    x = _array_arg(x)
    fmts = _formats_arg(formats)
    x64 = x.astype(np.float64).ravel()
    x64 = x64[np.isfinite(x64)]
    rms = float(np.sqrt(np.mean(x64 ** 2)))
    if scales is None:
        small = min(_positive_values(f)[0][0] for f in fmts)
        big = max(f.max for f in fmts)
        s_lo = small / rms / 4
        s_hi = big / rms * 4
        scales = np.geomspace(s_lo, s_hi, 241)
    else:
        scales = np.asarray(scales, dtype=np.float64)
        if scales.ndim != 1 or scales.size < 2 or not np.all(np.isfinite(scales)) \
                or np.any(scales <= 0):
            raise ValueError("scales must be a 1-D array of at least two finite positive "
                             "numbers")
        scales = np.sort(scales)
    sweeps = [(fmt, scale_sweep(x64, fmt, scales, rounding=rounding, saturate=saturate))
              for fmt in fmts]

    with _style():
        fig = _new_figure(8.0, 6.4)
        ax, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=(2.2, 1))
        for i, (fmt, sw) in enumerate(sweeps):
            db, over, under = sw.sqnr_db, sw.overflow_pct, sw.underflow_pct
            c = _color(i)
            ax.plot(scales, db, color=c, lw=1.6, label=fmt.name)
            ceil = _ceiling_db(fmt)
            if ceil is not None:
                ax.axhline(ceil, color=c, ls="--", lw=1)
                ax.annotate(f"{ceil:.1f} dB", (1.0, ceil), xycoords=("axes fraction", "data"),
                            xytext=(3, 0), textcoords="offset points", va="center",
                            fontsize=8, color=c)
            s_amax, v = sw.amax_scale, sw.amax_sqnr_db
            if scales[0] <= s_amax <= scales[-1]:
                if np.isfinite(v):
                    ax.plot([s_amax], [v], marker="v", color=c, markersize=8,
                            markeredgecolor="black", markeredgewidth=0.6, linestyle="none")
            ax2.plot(scales, over, color=c, lw=1.4)
            ax2.plot(scales, under, color=c, lw=1.4, ls=":")
        from matplotlib.lines import Line2D

        handles, _ = ax.get_legend_handles_labels()
        handles += [
            Line2D([], [], color="gray", ls="--", lw=1, label="ceiling 6.02 m + 13.5 dB"),
            Line2D([], [], color="gray", marker="v", ls="none", markeredgecolor="black",
                   label="amax scale s = max / max|x|"),
            Line2D([], [], color="gray", lw=1.4, label="overflow |x·s| > max (lower panel)"),
            Line2D([], [], color="gray", lw=1.4, ls=":", label="underflow to 0 (lower panel)"),
        ]
        ax.legend(handles=handles, loc="upper left", fontsize=8.5, ncols=2)
        top = np.nanmax([np.nanmax(np.r_[sw.sqnr_db, _ceiling_db(f) or 0, 0])
                         for f, sw in sweeps])
        ax.set_ylim(min(0.0, ax.get_ylim()[0]), top * 1.5 + 6)
        ax.set_ylabel("SQNR (dB)")
        ax.set_title(f"SQNR of q(x·s)/s for {x64.size:,} values (rms {rms:.3g}, "
                     f"amax {float(np.abs(x64).max()):.3g})")
        ax2.set_ylabel("share of elements (%)")
        ax2.set_ylim(-5, 105)
        ax2.set_xscale("log", base=2)
        _log2_axis(ax2.xaxis)
        ax2.set_xlim(scales[0], scales[-1])
        ax2.set_xlabel("scale s (x is quantized as q(x·s) / s; log scale)")
    return fig


# ---- 5. per-layer heatmaps ----------------------------------------------------------
def _trace_rows(trace) -> list[dict]:
    """Normalise a QuantContext, its trace dict, or a list of dicts to a list of dicts."""
    if hasattr(trace, "trace") and isinstance(trace.trace, dict):
        trace = trace.trace
    rows = []
    if isinstance(trace, dict):
        for key, st in trace.items():
            if not (isinstance(key, tuple) and len(key) == 2):
                raise ValueError("a trace dict must map (site, layer) tuples to SiteStats; got "
                                 f"key {key!r}")
            d = st.to_dict() if hasattr(st, "to_dict") else st
            if not isinstance(d, dict):
                raise TypeError("trace values must be SiteStats or dicts, got "
                                f"{type(st).__name__}")
            rows.append({**d, "site": key[0], "layer": key[1]})
    elif isinstance(trace, (list, tuple)):
        for i, d in enumerate(trace):
            if hasattr(d, "to_dict") and not isinstance(d, dict):
                d = d.to_dict()
            if not isinstance(d, dict):
                raise TypeError(f"trace[{i}] must be a dict, got {type(d).__name__}")
            for k in ("site", "layer"):
                if k not in d:
                    raise ValueError(f"trace[{i}] has no {k!r} key; each entry needs site, "
                                     "layer and the metric's fields")
            rows.append(dict(d))
    else:
        raise TypeError("trace must be QuantContext.trace (a dict of (site, layer) -> "
                        f"SiteStats) or a list of dicts; got {type(trace).__name__}")
    if not rows:
        raise ValueError("trace is empty; run the model with QuantContext(..., trace=True)")
    return rows


def _metric_value(d: dict, metric: str, i) -> float:
    def need(k):
        if k not in d:
            raise ValueError(f"trace entry {i} ({d.get('site')!r}, layer {d.get('layer')!r}) "
                             f"has no {k!r}, needed for metric {metric!r}")
        return float(d[k])

    if metric == "sqnr_db":
        if "sqnr_db" in d:
            return float(d["sqnr_db"])
        sig, noise = need("signal"), need("noise")
        return math.inf if noise == 0 else 10 * math.log10(sig / noise) if sig > 0 else -math.inf
    if metric == "amax":
        return need("amax")
    count = need("saturated" if metric == "saturation_rate" else "underflow")
    el = need("elements")
    return 100.0 * count / el if el > 0 else math.nan


def layer_heatmaps(trace, *, metric=("sqnr_db", "saturation_rate")):
    """Per-layer, per-site heatmaps of a traced model run: SQNR, saturation, underflow.

    Sites are rows (in the order the trace first met them, i.e. the forward pass), layers
    columns (entries with ``layer=None``, outside the layer stack, are the last column,
    ``-``).  Missing cells are blank; small grids are annotated with their values.

    Parameters
    ----------
    trace : QuantContext, dict or list of dict
        ``QuantContext.trace`` (``{(site, layer): SiteStats}``), the context itself, or a
        list of dicts with keys ``site``, ``layer`` and the fields the metrics need:
        ``sqnr_db`` (or ``signal`` and ``noise``), ``saturated``, ``underflow``,
        ``elements``, ``amax``.
    metric : str or tuple of str
        Any of :data:`HEATMAP_METRICS`: ``"sqnr_db"``, ``"saturation_rate"``,
        ``"underflow_rate"`` (both in % of elements), ``"amax"``.  One panel each.

    Returns
    -------
    matplotlib.figure.Figure
        One heatmap axes and one colour bar per metric.

    Raises
    ------
    ValueError
        Unknown metric, empty trace, a missing field, or a (site, layer) listed twice.
    TypeError
        ``trace`` of the wrong type.

    Examples
    --------
    >>> rows = [dict(site=s, layer=l, sqnr_db=30.0 - l, saturated=l, elements=100)
    ...         for s in ("q", "k") for l in range(3)]
    >>> fig = layer_heatmaps(rows)
    >>> len(fig.axes)  # two heatmaps and their colour bars
    4
    """
    metrics = _names_arg(metric, "metric", tuple(HEATMAP_METRICS))
    rows = _trace_rows(trace)
    sites, layers, cells = [], set(), {}
    for i, d in enumerate(rows):
        site, layer = d["site"], d["layer"]
        if not isinstance(site, str):
            raise TypeError(f"trace entry {i}: site must be a str, got {type(site).__name__}")
        if layer is not None and (not isinstance(layer, numbers.Integral)
                                  or isinstance(layer, bool)):
            raise TypeError(f"trace entry {i}: layer must be an int or None, got {layer!r}")
        if (site, layer) in cells:
            raise ValueError(f"trace lists ({site!r}, layer {layer!r}) more than once")
        if site not in sites:
            sites.append(site)
        layers.add(layer)
        cells[(site, layer)] = (i, d)
    cols = sorted(v for v in layers if v is not None) + ([None] if None in layers else [])

    with _style() as mpl:
        from matplotlib.colors import LogNorm, Normalize

        ns, nl = len(sites), len(cols)
        width = min(max(6.0, 0.42 * nl + 3.2), 18.0)
        height = sum(max(2.4, 0.3 * ns + 1.3) for _ in metrics) + 0.4
        fig = _new_figure(width, height)
        axes = fig.subplots(len(metrics), 1, squeeze=False)[:, 0]
        annotate = ns * nl <= 400
        for ax, m in zip(axes, metrics):
            grid = np.full((ns, nl), np.nan)
            for r, site in enumerate(sites):
                for c, layer in enumerate(cols):
                    if (site, layer) in cells:
                        i, d = cells[(site, layer)]
                        grid[r, c] = _metric_value(d, m, i)
            shown = grid.copy()
            finite = grid[np.isfinite(grid)]
            cmap = mpl.colormaps["viridis" if m == "sqnr_db" else "cividis"]
            if m == "sqnr_db":
                lo_v, hi_v = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
                if hi_v - lo_v < 3.0:  # no loud colours for differences of a few hundredths
                    mid = (lo_v + hi_v) / 2
                    lo_v, hi_v = mid - 1.5, mid + 1.5
                spread = np.ptp(finite) if finite.size else 0.0
                digits = 0 if spread >= 10 else 1 if spread >= 1 or spread == 0 else 2
                shown[np.isposinf(grid)] = hi_v
                shown[np.isneginf(grid)] = lo_v
                norm = Normalize(lo_v, hi_v)
                cmap = cmap.with_extremes(bad="white")
            else:
                pos = finite[finite > 0]
                if pos.size and (m == "amax" or pos.max() / pos.min() > 20):
                    norm = LogNorm(pos.min(), pos.max() if pos.max() > pos.min()
                                   else pos.min() * 10)
                    shown[np.isfinite(grid) & (grid <= 0)] = pos.min() / 10  # "under" colour
                else:
                    norm = Normalize(0.0, pos.max() if pos.size else 1.0)
                cmap = cmap.with_extremes(bad="white", under="#dddddd")
            im = ax.imshow(np.ma.masked_invalid(shown), aspect="auto", cmap=cmap, norm=norm,
                           interpolation="nearest")
            cb = fig.colorbar(im, ax=ax, extend="min" if isinstance(norm, LogNorm)
                              and m != "amax" else "neither", pad=0.01)
            cb.set_label(HEATMAP_METRICS[m])
            ax.set_xticks(range(nl), ["-" if c is None else str(c) for c in cols])
            ax.set_yticks(range(ns), sites)
            ax.tick_params(axis="x", labelsize=8 if nl > 24 else 9)
            ax.grid(False)
            ax.set_xlabel("layer" + ("  (-: outside the layer stack)" if None in cols else ""))
            ax.set_ylabel("site")
            ax.set_title(HEATMAP_METRICS[m].split(" (")[0] + " per site and layer",
                         loc="left", fontsize=10)
            if annotate:
                for r in range(ns):
                    for c in range(nl):
                        v = grid[r, c]
                        if np.isnan(v):
                            continue
                        if np.isinf(v):
                            txt = "inf" if v > 0 else "-inf"
                        elif m == "sqnr_db":
                            txt = f"{v:.{digits}f}"
                        elif v == 0:
                            txt = "0"
                        else:
                            txt = f"{v:.2g}"
                        ax.text(c, r, txt, ha="center", va="center",
                                fontsize=7 if nl > 16 else 8,
                                color=_heat_text_color(cmap, norm, shown[r, c]))
    return fig


# ---- 6. MX block scales -----------------------------------------------------------------
def mx_scale_histogram(x, recipe="mxfp8_e4m3", *, scale_rules=("floor", "rceil")):
    """Histograms of MX block-scale exponents and of clipping per block, per scale rule.

    For each rule the tensor is encoded with :func:`fpsim.quant.blocks.mx_encode`.  Left: the
    E8M0 block-scale exponents ``es`` (scale ``2**es``).  Right: the share of each
    block's elements that the scale pushes past the element format's max
    (``|x| / 2**es > max``), which are clipped to max.  OCP's ``floor`` rule clips some
    elements of some blocks; ``rceil`` never does, at the cost of resolution.  Blocks
    holding NaN or Inf (NaN scale) are left out.

    Parameters
    ----------
    x : array_like of float
    recipe : str or QuantSpec
        An MX recipe (``"mxfp8_e4m3"``, ``"mxfp8_e5m2"``, ``"mxfp6_e2m3"``,
        ``"mxfp6_e3m2"``, ``"mxfp4_e2m1"``, ``"mxint8"``) or a QuantSpec with power-of-two
        block scales; its axis and block size are used.
    scale_rules : str or tuple of str
        Rules to compare, from :data:`fpsim.quant.blocks.SCALE_RULES`.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes: scale exponents and clipped fraction per block.

    Raises
    ------
    ValueError
        Unknown or non-MX recipe, unknown scale rule, ``x`` without finite non-zero values.
    TypeError
        Arguments of the wrong type.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    >>> fig = mx_scale_histogram(x, "mxfp4_e2m1")
    >>> fig.axes[0].get_xlabel()
    'block scale exponent (log2)'
    """
    from .measure import (is_recipe_arg, mx_recipe_names, mx_scale_rules, mx_scale_stats,
                          resolve_recipe)

    x = _array_arg(x)
    if not is_recipe_arg(recipe):
        raise TypeError(f"recipe must be an MX recipe name or a QuantSpec, got "
                        f"{type(recipe).__name__}")
    spec = resolve_recipe(recipe)
    if not spec.is_mx:
        mx = mx_recipe_names()
        raise ValueError(f"recipe must have power-of-two (E8M0) block scales, e.g. "
                         f"{', '.join(mx)}; got {recipe if isinstance(recipe, str) else spec.describe()!r}")
    rules = _names_arg(scale_rules, "scale_rules", mx_scale_rules())
    if x.ndim == 0:
        x = x.reshape(1)
    fmt = spec.format
    k = spec.block_size
    if not -x.ndim <= spec.axis < x.ndim:
        raise ValueError(f"the recipe's axis {spec.axis} is out of range for x with "
                         f"{x.ndim} dimension(s)")
    results = []
    for rule in rules:
        st = mx_scale_stats(x, spec, rule)
        results.append((rule, st.exponents, st.clipped_fraction, st.clipped, st.elements))

    with _style():
        fig = _new_figure(10.0, 4.4)
        ax1, ax2 = fig.subplots(1, 2)
        width = 0.8 / len(results)
        lo = min(int(r[1].min()) for r in results if r[1].size) if any(
            r[1].size for r in results) else 0
        hi = max(int(r[1].max()) for r in results if r[1].size) if any(
            r[1].size for r in results) else 0
        ex = np.arange(lo, hi + 1)
        fr_edges = (np.arange(k + 2) - 0.5) / k
        for i, (rule, es, frac, nclip, nel) in enumerate(results):
            c = _color(i)
            off = (i - (len(results) - 1) / 2) * width
            counts = np.array([np.count_nonzero(es == e) for e in ex])
            ax1.bar(ex + off, counts, width=width, color=c, label=rule)
            hist, _ = np.histogram(frac, bins=fr_edges)
            centers = np.arange(k + 1) / k
            blocks_clip = 100.0 * np.count_nonzero(frac > 0) / max(frac.size, 1)
            ax2.bar(centers + off / k, hist, width=width / k, color=c,
                    label=f"{rule}: {blocks_clip:.1f}% of blocks, "
                          f"{100.0 * nclip / max(nel, 1):.2f}% of elements")
        ax1.set_xlabel("block scale exponent (log2)")
        ax1.set_ylabel("blocks")
        if ex.size <= 16:
            ax1.set_xticks(ex)
        ax1.legend(title="scale rule")
        ax1.set_title("E8M0 block scales", loc="left", fontsize=10)
        ax2.set_yscale("log")
        ax2.set_xlabel("clipped elements per block (fraction of the block)")
        ax2.set_ylabel("blocks (log scale)")
        ax2.set_title(f"elements with |x| / scale > {_num(fmt.max)} (clipped)", loc="left",
                      fontsize=10)
        ax2.legend(title="scale rule: clipped", loc="upper right")
        ax2.set_xlim(-0.5 / k - width / k, max(0.25, float(max(
            (r[2].max() if r[2].size else 0) for r in results))) + 1.0 / k)
        ax2.set_ylim(0.5, None)
        total = results[0][1].size
        fig.suptitle(f"{spec.name or spec.describe()}: {fmt.name} elements, blocks of {k} "
                     f"along axis {spec.axis}, {total:,} blocks")
    return fig


def layer_sqnr_lines(per_preset: dict, *, title: str = "Hidden-state SQNR against FP32"):
    """SQNR of each layer's hidden state against the FP32 run, one line per preset.

    Parameters
    ----------
    per_preset : dict
        Preset name -> sequence of SQNR values in dB (index 0 = embeddings), as in
        ``EvalResult.layer_sqnr_db``.  Infinite values (identical to FP32) are left out.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = layer_sqnr_lines({"int8": [60.0, 45.0, 40.0], "mxfp4": [30.0, 22.0, 19.0]})
    >>> fig.axes[0].get_ylabel()
    'SQNR against FP32 (dB)'
    """
    if not isinstance(per_preset, dict) or not per_preset:
        raise ValueError("per_preset must be a non-empty dict of preset -> SQNR values")
    with _style():
        fig = _new_figure(9.0 if len(per_preset) > 6 else 7.5, 4.4)
        ax = fig.add_subplot()
        markers = "osD^v<>ph*"
        for i, (name, values) in enumerate(per_preset.items()):
            v = np.asarray(values, dtype=np.float64)
            if v.ndim != 1:
                raise ValueError(f"per_preset[{name!r}] must be a 1-D sequence of dB values")
            keep = np.isfinite(v)
            if not keep.any():
                continue
            ax.plot(np.arange(v.size)[keep], v[keep], marker=markers[i % len(markers)], ms=4,
                    color=_color(i), ls=("-", "--", ":")[(i // len(PALETTE)) % 3],
                    label=str(name))
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel("SQNR against FP32 (dB)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if len(per_preset) > 6:  # many lines: the legend goes outside, on the right
            ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        else:
            ax.legend(fontsize=8, loc="best")
    return fig


def qat_loss_curve(losses, *, title: str = "Quantization-aware training", window: int = 0):
    """The training loss of every step (log scale), with a running mean.

    Parameters
    ----------
    losses : sequence of float
        One loss per step (``QATResult.losses``).
    title : str
    window : int
        Steps of the running mean (0: about a twentieth of the run, at least 1).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = qat_loss_curve([0.08, 0.05, 0.03, 0.02])
    >>> fig.axes[0].get_xlabel(), fig.axes[0].get_yscale()
    ('step', 'log')
    """
    v = np.asarray(losses, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError("losses must be a non-empty 1-D sequence of floats")
    window = _int_arg(window, "window", 0) or max(1, v.size // 20)
    with _style():
        fig = _new_figure(6.4, 3.8)
        ax = fig.add_subplot()
        steps = np.arange(1, v.size + 1)
        ax.plot(steps, v, color=_color(0), alpha=0.35, lw=1, label="loss")
        if window > 1 and v.size >= window:
            mean = np.convolve(v, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1:], mean, color=_color(0), lw=2,
                    label=f"running mean ({window} steps)")
        if np.all(v > 0):
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("distillation loss")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return fig
