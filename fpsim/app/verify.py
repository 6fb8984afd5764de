"""Check ``fpsim.encode`` against ml_dtypes' casts on float32 inputs (``fpsim verify``).

For every ml_dtypes float format of 8 bits or fewer (``float8_e5m3fnu``
included), ``fpsim.encode(x, fmt)`` must equal
``x.astype(ml_dtypes.<fmt>).view(np.uint8)`` bit for bit, except on the
one ml_dtypes bug of versions before 0.7: ``float8_e8m0fnu`` inputs in the open
interval (2^-127, 1.5 * 2^-127), which those versions round to 2^-126 (code 0x01)
where the correct result is 2^-127 (code 0x00). Whether the installed ml_dtypes
has the bug is probed (:func:`ml_dtypes_quirks`), never assumed; only then are
those inputs counted apart.

ml_dtypes is a test-only dependency and is imported lazily.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..formats import FloatFormat, IntFormat, get_format

__all__ = ["MlDtypesQuirks", "boundary_bits", "e8m0_ties", "int_reference", "known_ml_dtypes_bug",
           "ml_dtypes_quirks",
           "require_ml_dtypes", "run_verify", "sample_bits"]

_E8M0_BUG_LO = np.float32(2.0**-127)
_E8M0_BUG_HI = np.float32(1.5 * 2.0**-127)


def require_ml_dtypes(*names: str):
    """Import ml_dtypes (and check it has ``names``), or raise ImportError saying what to install."""
    try:
        import ml_dtypes
    except ImportError:
        raise ImportError(
            "this command needs ml_dtypes, a test-only dependency: "
            "pip install ml_dtypes (or pip install 'fpsim[test]')"
        ) from None
    missing = [n for n in names if not hasattr(ml_dtypes, n)]
    if missing:
        raise ImportError(
            f"ml_dtypes {getattr(ml_dtypes, '__version__', '?')} has no {', '.join(missing)}: "
            "pip install -U ml_dtypes (float8_e5m3fnu needs 0.7 or later)"
        )
    return ml_dtypes


@dataclass(frozen=True)
class MlDtypesQuirks:
    """What the installed ml_dtypes does where versions differ (probed, not assumed).

    Attributes
    ----------
    version : str
        ``ml_dtypes.__version__``.
    e8m0_tie_bug : bool
        True if float32 inputs in (2^-127, 1.5 * 2^-127) cast to ``float8_e8m0fnu``
        give 2^-126 (code 0x01) instead of the correct 2^-127 (code 0x00); versions
        before 0.7.
    float64_double_rounding : bool
        True if a float64 array cast rounds through float32 first (rounding twice, wrong
        just above a tie); versions before 0.7 round twice, 0.7 rounds once.
    e8m0_ties_to_even : bool
        True if ``float8_e8m0fnu`` breaks ties (1.5 * 2^k) to the even code; ml_dtypes
        0.5.0 does, 0.5.1 and newer (and fpsim, see docs/numerics.md) round them up.
    """

    version: str
    e8m0_tie_bug: bool
    float64_double_rounding: bool
    e8m0_ties_to_even: bool = False


_QUIRKS: dict = {}


def ml_dtypes_quirks(ml_dtypes=None) -> MlDtypesQuirks:
    """Probe the installed ml_dtypes once for the behaviours that changed between versions.

    Examples
    --------
    >>> import ml_dtypes
    >>> q = ml_dtypes_quirks()
    >>> q.version == ml_dtypes.__version__, q is ml_dtypes_quirks()  # probed once
    (True, True)
    """
    if ml_dtypes is None:
        ml_dtypes = require_ml_dtypes()
    version = getattr(ml_dtypes, "__version__", "?")
    if version not in _QUIRKS:
        with np.errstate(all="ignore"):
            x = np.array([1.25 * 2.0**-127, 1.5 * 2.0**-125], np.float32)
            e8m0, tie = x.astype(ml_dtypes.float8_e8m0fnu).view(np.uint8).tolist()
            # just above the tie 1.0625 between 0x38 (1.0) and 0x39 (1.125); float32 rounds
            # it onto the tie, which then breaks to the even code 0x38
            y = np.array([np.nextafter(1.0625, 2.0)], np.float64)
            e4m3 = int(y.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)[0])
        if e8m0 not in (0x00, 0x01) or e4m3 not in (0x38, 0x39) or tie not in (0x02, 0x03):
            raise RuntimeError(f"ml_dtypes {version}: unexpected probe results e8m0 0x{e8m0:02X} "
                               f"and 0x{tie:02X}, e4m3fn 0x{e4m3:02X}")
        _QUIRKS[version] = MlDtypesQuirks(version, e8m0 == 0x01, e4m3 == 0x38, tie == 0x02)
    return _QUIRKS[version]


def _is_plain_int(fmt) -> bool:
    return isinstance(fmt, IntFormat) and not fmt.bit_patterns and fmt.scale_exp == 0


def int_reference(x: np.ndarray, fmt) -> np.ndarray:
    """The integers ``encode(x, fmt)`` must give for a plain integer format, by numpy.

    ``np.rint`` (round half to even), clipped to ``[min_int, max_int]``; NaN gives 0
    (docs/numerics.md). ml_dtypes' integer casts truncate and wrap like C, so they are
    not a rounding oracle.

    Examples
    --------
    >>> int_reference(np.float32([0.5, 1.5, -7.0, np.nan, np.inf]), "int2").tolist()
    [0, 1, -2, 0, 1]
    """
    fmt = get_format(fmt)
    x = np.asarray(x)
    with np.errstate(invalid="ignore"):
        r = np.clip(np.rint(x), fmt.min_int, fmt.max_int)
    r[np.isnan(r)] = 0
    return r.astype(np.int64)


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """np.unique by sort (np.unique hashes in numpy >= 2.3: many times slower on 2^24 ints)."""
    a = np.sort(a)
    keep = np.ones(a.size, dtype=bool)
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def boundary_bits(fmt) -> np.ndarray:
    """float32 bit patterns at and around every rounding boundary of ``fmt``.

    Every finite value of the format, every midpoint between neighbours
    (including the midpoint to the first value past ``max``), half the smallest
    value, each of those one float32 ulp up and down, both signs, and the
    float32 specials (signed zeros, infinities, NaNs with payloads).

    Examples
    --------
    >>> bits = boundary_bits(get_format("float4_e2m1fn"))
    >>> x = bits.view(np.float32)
    >>> bool(np.any(x == 5.0)), bool(np.any(x == 7.0))  # midpoints 4|6 and 6|8
    (True, True)
    """
    fmt = get_format(fmt)
    v = fmt.values()
    v = np.unique(np.abs(v[np.isfinite(v)]))  # sorted, >= 0
    top_ulp = (2.0 ** (fmt.emax - fmt.mantissa_bits) if isinstance(fmt, FloatFormat)
               else 2.0 ** fmt.scale_exp)
    past_max = fmt.max + top_ulp
    grid = np.append(v, past_max)
    pts = np.concatenate([grid, (grid[:-1] + grid[1:]) / 2, [grid[grid > 0][0] / 2]])
    with np.errstate(over="ignore"):
        f = pts.astype(np.float32)
    f = np.concatenate([f, np.nextafter(f, np.float32(np.inf)), np.nextafter(f, np.float32(0))])
    f = np.concatenate([f, -f])
    specials = np.array([0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000,
                         0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0xFFFFFFFF,
                         0x7F7FFFFF, 0xFF7FFFFF, 0x00000001, 0x80000001], dtype=np.uint32)
    return _sorted_unique(np.concatenate([f.view(np.uint32), specials]))


def sample_bits(fmts, n: int = 1 << 24, *, seed: int = 0) -> np.ndarray:
    """About ``n`` float32 bit patterns: a fixed odd stride over all 2^32, random
    ones, and the :func:`boundary_bits` of every format in ``fmts`` (sorted, unique).

    Examples
    --------
    >>> bits = sample_bits(["float4_e2m1fn"], 1000)
    >>> bits.dtype.name, 1000 <= bits.size <= 1200
    ('uint32', True)
    """
    half = n // 2
    stride = ((1 << 32) // max(half, 1)) | 1  # odd: the low bits vary too
    strided = (np.arange(half, dtype=np.uint64) * np.uint64(stride)).astype(np.uint32)
    random = np.random.default_rng(seed).integers(0, 1 << 32, n - half, dtype=np.uint32)
    edges = [boundary_bits(get_format(f)) for f in fmts]
    return _sorted_unique(np.concatenate([strided, random, *edges]))


def known_ml_dtypes_bug(fmt, x: np.ndarray, ours: np.ndarray, theirs: np.ndarray, *,
                        quirks: MlDtypesQuirks | None = None) -> np.ndarray:
    """Mask of mismatches explained by ml_dtypes' e8m0 bug on (2^-127, 1.5 * 2^-127).

    With ``quirks`` (from :func:`ml_dtypes_quirks`) saying the installed ml_dtypes does
    not have the bug, nothing is explained (all False).

    Examples
    --------
    >>> x = np.array([1e-38, 1.0], np.float32)  # both above the interval
    >>> known_ml_dtypes_bug("float8_e8m0fnu", x, np.array([0, 0x7F]), np.array([1, 0x80])).tolist()
    [False, False]
    >>> x = np.array([np.float32(2**-127) * np.float32(1.25)])
    >>> known_ml_dtypes_bug("float8_e8m0fnu", x, np.array([0]), np.array([1])).tolist()
    [True]
    """
    known = np.zeros(np.shape(x), dtype=bool)
    if get_format(fmt).name != "float8_e8m0fnu":
        return known
    if quirks is None or quirks.e8m0_tie_bug:
        known |= (x > _E8M0_BUG_LO) & (x < _E8M0_BUG_HI) & (ours == 0x00) & (theirs == 0x01)
    if quirks is not None and quirks.e8m0_ties_to_even:
        known |= e8m0_ties(x) & (theirs == ours - 1) & (theirs % 2 == 0)
    return known


def e8m0_ties(x: np.ndarray) -> np.ndarray:
    """Mask of float32 ``x`` halfway between two ``float8_e8m0fnu`` values (1.5 * 2^k, k >= -127).

    Examples
    --------
    >>> e8m0_ties(np.array([3.0, 1.5, 2.0, -3.0], np.float32)).tolist()
    [True, True, False, False]
    """
    x = np.asarray(x, np.float32)
    b = x.view(np.uint32)
    return (x > 0) & np.isfinite(x) & ((b & 0x7FFFFF) == 0x400000) & ((b >> 23) >= 1)


@dataclass
class _Stats:
    name: str
    checked: int = 0
    mismatches: int = 0
    known: int = 0
    t_fpsim: float = 0.0
    t_ml: float = 0.0
    examples: list = field(default_factory=list)
    known_example: tuple | None = None


class _Progress:
    """tqdm if installed, else a plain counter on stderr."""

    def __init__(self, total: int, desc: str):
        self.total, self.done, self.desc = total, 0, desc
        self.t0 = time.perf_counter()
        self._last = -1
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=total, desc=desc, unit="in", unit_scale=True,
                            file=sys.stderr, mininterval=1.0)

    def update(self, n: int):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        pct = int(100 * self.done / self.total)
        step = 1 if sys.stderr.isatty() else 10
        if pct // step != self._last:
            self._last = pct // step
            end = "\r" if sys.stderr.isatty() else "\n"
            print(f"{self.desc}: {pct:3d}% ({self.done:,}/{self.total:,}, "
                  f"{time.perf_counter() - self.t0:.0f} s)", end=end, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif sys.stderr.isatty():
            print(file=sys.stderr)


def _check_chunk(x, fmts, stats, codes, *, seed, max_shown, ml) -> None:
    """Compare fpsim with the reference on the float32 inputs ``x``, adding to ``stats``;
    ``ml`` is (ml_dtypes types by name, quirks), or None for the stochastic check."""
    from ..codec import encode

    stochastic = ml is None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # ml_dtypes' casts of NaN/Inf
        for fmt in fmts:
            st = stats[fmt.name]
            t0 = time.perf_counter()
            if stochastic:
                got = encode(x, fmt, rounding="stochastic", rng=seed,
                             out=codes[fmt.name][: x.size])
                t1 = time.perf_counter()
                ref = encode(x.astype(np.float64), fmt, rounding="stochastic", rng=seed)
            else:
                got = encode(x, fmt, out=codes[fmt.name][: x.size])
                t1 = time.perf_counter()
                ref = (int_reference(x, fmt) if _is_plain_int(fmt)
                       else x.astype(ml[0][fmt.name]).view(np.uint8))
            t2 = time.perf_counter()
            st.t_fpsim += t1 - t0
            st.t_ml += t2 - t1
            st.checked += x.size
            bad = np.flatnonzero(got != ref)
            if bad.size:
                known = (np.zeros(bad.size, dtype=bool) if stochastic
                         else known_ml_dtypes_bug(fmt, x[bad], got[bad], ref[bad],
                                                   quirks=ml[1]))
                st.known += int(known.sum())
                unexplained = bad[~known]
                st.mismatches += unexplained.size
                for i in unexplained[: max(0, max_shown - len(st.examples))]:
                    st.examples.append((int(x[i:i + 1].view(np.uint32)[0]), float(x[i]),
                                        int(got[i]), int(ref[i])))
                if st.known_example is None and known.any():
                    i = bad[known][0]
                    st.known_example = (int(x[i:i + 1].view(np.uint32)[0]), float(x[i]),
                                        int(got[i]), int(ref[i]))


def _exhaustive_chunk(start: int, stop: int, names, stochastic: bool, seed: int,
                      max_shown: int) -> dict:
    """The stats of the float32 bit patterns [start, stop) (a Dask task of ``--scheduler``)."""
    fmts = [get_format(n) for n in names]
    ml = None
    if not stochastic:
        floats = [f for f in fmts if not _is_plain_int(f)]
        ml_dtypes = require_ml_dtypes(*(f.name for f in floats))
        ml = ({f.name: getattr(ml_dtypes, f.name) for f in floats}, ml_dtypes_quirks(ml_dtypes))
    stats = {f.name: _Stats(f.name) for f in fmts}
    codes = {f.name: np.empty(stop - start, dtype=f.code_dtype) for f in fmts}
    x = np.arange(start, stop, dtype=np.uint64).astype(np.uint32).view(np.float32)
    _check_chunk(x, fmts, stats, codes, seed=seed, max_shown=max_shown, ml=ml)
    return stats


def _run_on_dask(scheduler, stats, names, total, chunk, stochastic, seed, max_shown) -> None:
    """The exhaustive check's chunks as tasks on the Dask cluster at ``scheduler`` (an
    address or a ``distributed.Client``); partial stats merged in input order."""
    try:
        import distributed
    except ImportError:
        raise ImportError("--scheduler runs on dask.distributed: pip install "
                          "'fpsim[sweep]'") from None
    own = not isinstance(scheduler, distributed.Client)
    client = distributed.Client(scheduler) if own else scheduler
    try:
        futures = [client.submit(_exhaustive_chunk, a, min(a + chunk, total), list(names),
                                 stochastic, seed, max_shown, pure=False)
                   for a in range(0, total, chunk)]
        progress = _Progress(total, "verify") if len(futures) > 1 else None
        for f in distributed.as_completed(futures):
            if progress is not None:
                progress.update(sum(s.checked for s in f.result().values()) // len(names))
        if progress is not None:
            progress.close()
        for f in futures:  # in input order: the same examples as the local run
            for name, part in f.result().items():
                st = stats[name]
                st.checked += part.checked
                st.mismatches += part.mismatches
                st.known += part.known
                st.t_fpsim += part.t_fpsim
                st.t_ml += part.t_ml
                st.examples.extend(part.examples[: max(0, max_shown - len(st.examples))])
                if st.known_example is None:
                    st.known_example = part.known_example
    finally:
        if own:
            client.close()


def run_verify(names, *, exhaustive: bool = False, sample: int = 1 << 24, chunk: int = 1 << 24,
               seed: int = 0, max_shown: int = 5, stochastic: bool = False, file=None,
               scheduler=None) -> int:
    """Compare fpsim.encode with ml_dtypes on float32 inputs; print a report.

    With ``stochastic``, compare instead fpsim's stochastic rounding of float32 inputs
    (its fast kernels) with the same rounding of the same values as float64 (the generic
    bit kernel, itself tested against ``fpsim.reference``), random bits keyed by the
    element's index in its chunk with seed ``seed``; any format.

    With ``scheduler`` (a Dask scheduler address or ``distributed.Client``; needs
    ``exhaustive``), the chunks run as tasks on that cluster (``fpsim verify --exhaustive
    --scheduler ADDRESS``); the report is the same.

    Returns the exit status: 0 if every mismatch is a known ml_dtypes bug, else 1.
    """
    from .tables import format_table

    if scheduler is not None and not exhaustive:
        raise ValueError("scheduler: a Dask cluster runs the exhaustive check only "
                         "(exhaustive=True, --exhaustive); the sample runs locally")
    out = file if file is not None else sys.stdout
    fmts = [get_format(n) for n in names]
    if stochastic:
        ref_label = "float64 kernel"
        intro = (f"fpsim verify --stochastic: encode(x, fmt, rounding='stochastic', rng={seed}) "
                 f"on float32 x vs on float64(x) (the generic bit kernel)")
    else:
        floats = [f for f in fmts if not _is_plain_int(f)]
        ml_dtypes = require_ml_dtypes(*(f.name for f in floats))
        ml_types = {f.name: getattr(ml_dtypes, f.name) for f in floats}
        ref_label = "ml_dtypes"
        quirks = ml_dtypes_quirks(ml_dtypes)
        intro = (f"fpsim verify: encode(x, fmt) vs x.astype(ml_dtypes.<fmt>) (integer formats: "
                 f"vs numpy's rint, ties to even, clipped to the range, NaN -> 0); "
                 f"ml_dtypes {ml_dtypes.__version__} (e8m0 tie bug of ml_dtypes < 0.7: "
                 f"{'present' if quirks.e8m0_tie_bug else 'absent'}"
                 f"{'; e8m0 ties to even as in ml_dtypes 0.5.0' if quirks.e8m0_ties_to_even else ''})")

    if exhaustive:
        total = 1 << 32
        what = "all 2^32 float32 bit patterns"

        def source(start, stop):
            return np.arange(start, stop, dtype=np.uint64).astype(np.uint32)
    else:
        bits = sample_bits(fmts, sample, seed=seed)
        total = bits.size
        what = (f"{total:,} float32 bit patterns (stride over 2^32, random with seed {seed}, "
                "format boundaries)")

        def source(start, stop):
            return bits[start:stop]

    print(f"{intro}, on {what}; numpy {np.__version__}", file=out, flush=True)

    stats = {f.name: _Stats(f.name) for f in fmts}
    n_chunks = -(-total // chunk)
    t_start = time.perf_counter()
    if scheduler is not None:
        _run_on_dask(scheduler, stats, names, total, chunk, stochastic, seed, max_shown)
    else:
        codes = {f.name: np.empty(min(chunk, total), dtype=f.code_dtype) for f in fmts}
        progress = _Progress(total, "verify") if n_chunks > 1 else None
        ctx = None if stochastic else (ml_types, quirks)
        for start in range(0, total, chunk):
            x = source(start, min(start + chunk, total)).view(np.float32)
            _check_chunk(x, fmts, stats, codes, seed=seed, max_shown=max_shown, ml=ctx)
            if progress is not None:
                progress.update(x.size)
        if progress is not None:
            progress.close()

    header = ["format", "inputs", "mismatches", "known ml_dtypes bug", "fpsim s", f"{ref_label} s",
              "result"]
    rows = [[s.name, f"{s.checked:,}", f"{s.mismatches:,}", f"{s.known:,}", f"{s.t_fpsim:.2f}",
             f"{s.t_ml:.2f}", "ok" if s.mismatches == 0 else "FAIL"] for s in stats.values()]
    print(format_table(header, rows, right={1, 2, 3, 4, 5}), file=out)

    for s in stats.values():
        if s.known_example is not None:
            b, v, ours, theirs = s.known_example
            why = []
            if quirks.e8m0_tie_bug:
                why.append("inputs in (2^-127, 1.5*2^-127) give 2^-126 instead of 2^-127: "
                           "a known bug of ml_dtypes < 0.7")
            if quirks.e8m0_ties_to_even:
                why.append("ties 1.5*2^k go to the even code: ml_dtypes 0.5.0 (0.5.1 and "
                           "fpsim round them up)")
            print(f"note: {s.name}: {s.known:,} inputs explained by ml_dtypes "
                  f"{quirks.version} ({'; '.join(why)}), e.g. 0x{b:08X} ({v!r}): ml_dtypes "
                  f"gives 0x{theirs:02X}, fpsim 0x{ours:02X}; not counted as failures", file=out)
        for b, v, ours, theirs in s.examples:
            print(f"mismatch: {s.name}: input 0x{b:08X} ({v!r}): fpsim 0x{ours:02X}, "
                  f"{ref_label} 0x{theirs:02X}", file=out)

    failed = [s.name for s in stats.values() if s.mismatches]
    elapsed = time.perf_counter() - t_start
    if failed:
        print(f"FAILED: unexplained mismatches in {', '.join(failed)} ({elapsed:.1f} s)", file=out)
        return 1
    print(f"OK: {len(stats)} format(s), no unexplained mismatch ({elapsed:.1f} s)", file=out)
    return 0
