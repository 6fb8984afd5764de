"""Evaluation statistics, storage accounting, and the report (small, on the real MiniLM)."""

import json
import math

import numpy as np
import pytest

import fpsim
import fpsim.data
import fpsim.models
from fpsim.app import evaluate as ev


def test_spearman_hand_cases_and_ties():
    assert ev.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert ev.spearman([1, 2, 3], [3, 2, 1]) == -1.0
    # ranks with ties: a -> [1, 2.5, 2.5, 4], b -> [1, 3, 2, 4]; Pearson of the ranks
    ra, rb = np.array([1, 2.5, 2.5, 4]), np.array([1, 3, 2, 4])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    want = float(ra @ rb / math.sqrt((ra @ ra) * (rb @ rb)))
    assert ev.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(want)
    with pytest.raises(ValueError, match="same length"):
        ev.spearman([1, 2], [1, 2, 3])


def test_embedding_metrics_identity_and_noise():
    rng = np.random.default_rng(0)
    e = rng.standard_normal((40, 16))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    m = ev.embedding_metrics(e, e)
    assert m["cosine_mean"] == pytest.approx(1.0) and m["nn_agreement"] == 1.0
    assert m["similarity_spearman"] == pytest.approx(1.0)
    noisy = e + 0.3 * rng.standard_normal(e.shape)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    m2 = ev.embedding_metrics(e, noisy)
    assert m2["cosine_min"] < m2["cosine_mean"] < 1 and m2["similarity_spearman"] < 1


def test_lm_metrics_on_synthetic_logits():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((200, 50)).astype(np.float32)
    targets = rng.integers(0, 50, 200)
    same = ev.lm_metrics(logits, logits, targets, n_boot=50)
    assert same["ppl_delta"] == 0 and same["kl_mean"] == pytest.approx(0, abs=1e-9)
    assert same["top1_agreement"] == 1.0
    # perplexity by hand: exp(mean(logsumexp - logit[target]))
    lse = np.log(np.exp(logits.astype(np.float64)).sum(1))
    want = math.exp(float(np.mean(lse - logits[np.arange(200), targets])))
    assert same["ppl_fp32"] == pytest.approx(want, rel=1e-12)
    worse = ev.lm_metrics(logits, logits + rng.standard_normal(logits.shape), targets, n_boot=200)
    lo, hi = worse["ppl_delta_ci95"]
    assert lo <= worse["ppl_delta"] <= hi and worse["kl_mean"] > 0


def test_lm_metrics_do_not_depend_on_the_chunking(monkeypatch):
    # the rows are processed in chunks (bounded float64 temporaries): results are exact
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((150, 40)).astype(np.float32) * 3
    q = ref + rng.standard_normal(ref.shape).astype(np.float32)
    q[7, 3] = np.inf  # a broken row stays its own
    targets = rng.integers(0, 40, 150)
    monkeypatch.setattr(ev, "_CHUNK", 10**6)
    whole = ev.lm_metrics(ref, q, targets, n_boot=50)
    monkeypatch.setattr(ev, "_CHUNK", 7)
    np.testing.assert_equal(ev.lm_metrics(ref, q, targets, n_boot=50), whole)  # NaN == NaN


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_lm_metrics_kl_is_the_metrics_kl_divergence(scale):
    rng = np.random.default_rng(3)
    ref = (rng.standard_normal((70, 300)) * scale).astype(np.float32)
    q = ref + rng.standard_normal(ref.shape).astype(np.float32)
    targets = rng.integers(0, 300, 70)
    want = np.mean(fpsim.metrics.kl_divergence(ref, q, axis=-1, from_logits=True))
    assert ev.lm_metrics(ref, q, targets, n_boot=20)["kl_mean"] == pytest.approx(want, rel=1e-10)
    assert ev.lm_metrics(ref, ref, targets, n_boot=20)["kl_mean"] == 0.0


def test_weight_storage():
    w = {("q", 0): np.ones((64, 32), np.float32), ("up", 0): np.ones((64, 128), np.float32)}
    cfg = fpsim.models.QuantConfig(sites={"q": "int8_channel", "up": "mxfp4_e2m1"})
    s = ev.weight_storage(w, cfg)
    # q: 2048 int8 + 32 fp32 scales; up: 8192 * 4 bits + 8192/32 E8M0 bytes
    assert s["bytes"] == 2048 + 32 * 4 + 8192 // 2 + 8192 // 32
    assert ev.weight_storage(w, None)["ratio_to_fp32"] == 1.0


@pytest.mark.slow
def test_evaluate_minilm_small(model_files):
    model_files("minilm")
    res = ev.evaluate("minilm", ["int8", "mxfp4"], sentences=fpsim.data.sentences()[:24],
                      progress=False)
    by = {r.preset: r for r in res}
    assert by["int8"].metrics["cosine_mean"] > 0.99 > by["mxfp4"].metrics["cosine_mean"]
    assert len(by["int8"].layer_sqnr_db) == 7 and by["int8"].trace
    md = ev.results_markdown(res)
    assert md.count("\n") == 4 and "| int8 |" in md
    json.loads(ev.results_json(res))


def test_default_presets_leave_out_the_slow_ones():
    from fpsim.models import PRESETS, preset

    names = ev.default_presets()
    slow = [n for n in PRESETS if preset(n).accumulator or preset(n).accumulators
            or preset(n).weight_algorithm]
    assert set(names) == set(PRESETS) - set(slow) and "fp8_hopper" in slow
    assert "int4_g128_awq" in slow and "mxfp4" in names and "fp32" in names
    with pytest.raises(TypeError, match="write \\['int8'\\] for one preset"):
        ev.evaluate("minilm", "int8")


def test_evaluate_says_how_long_it_will_take(model_files, capsys):
    model_files("minilm")
    ev.evaluate("minilm", ["int8"], sentences=fpsim.data.sentences()[:8])
    err = capsys.readouterr().err
    assert "minilm's FP32 pass took" in err and "1 preset(s), about" in err
    ev._estimate(100.0, ["int8", "int4_g128_gptq", "fp8_hopper"], "smollm2", True)
    err = capsys.readouterr().err  # 100 s x 1.4 x 3 presets
    assert "3 preset(s), about 7 min; 2 of them (int4_g128_gptq, fp8_hopper) emulate" in err


@pytest.mark.slow
def test_report_quick(tmp_path, model_files):
    model_files("minilm")
    from fpsim.app.report import make_report

    index = make_report(tmp_path / "rep", presets=("int8",), quick=True, quiet=True)
    text = index.read_text()
    assert "## Synthetic data" in text and "| int8 |" in text
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert {"number_line.png", "relative_error.png", "error_histogram.png",
            "sqnr_vs_scale.png", "mx_scales.png", "layer_sqnr.png"} <= set(pngs)
    data = json.loads((tmp_path / "rep" / "results.json").read_text(),
                      parse_constant=_no_constants)
    assert data["minilm"][0]["preset"] == "int8"
    assert data["minilm"][0]["seed"] == 0 and data["minilm"][0]["batch_size"] == 64
    assert data["run"]["versions"]["fpsim"] == fpsim.__version__


def test_bootstrap_ci_names_a_bad_rng():
    with pytest.raises(ValueError, match=r"rng: an int seed must satisfy 0 <= seed"):
        ev.bootstrap_ci(lambda i: 0.0, 10, n_boot=5, rng=-1)
    with pytest.raises(TypeError, match="rng must be an int seed"):
        ev.bootstrap_ci(lambda i: 0.0, 10, n_boot=5, rng="seed")


def test_weight_storage_counts_negative_excluded_layers_as_fp32():
    from fpsim.app.evaluate import weight_storage
    from fpsim.models import QuantConfig

    w = np.ones((64, 32), np.float32)
    weights = {("q", i): w for i in range(6)}
    cfg = QuantConfig(sites={"q": "int8_channel"}, exclude_layers=(-1,))
    got = weight_storage(weights, cfg)
    one_int8 = weight_storage({("q", 0): w}, QuantConfig(sites={"q": "int8_channel"}))["bytes"]
    assert got["bytes"] == 5 * one_int8 + 4 * w.size


def test_weight_storage_is_what_the_model_quantized():
    """From the context's record of the weights it quantized (and the spec it used)."""
    from fpsim.app.evaluate import weight_storage
    from fpsim.models import QuantConfig, QuantContext

    x = np.ones((3, 64), np.float32)
    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    ctx = QuantContext(QuantConfig(sites={"q": "int8_channel"}, exclude_layers=(-1,)),
                       n_layers=2)
    for layer in (0, 1):
        ctx.linear("q", layer, x, w)
    assert set(ctx.weight_specs) == {("q", 0)}
    got = weight_storage({("q", 0): w, ("q", 1): w}, None, quantized=ctx.weight_specs)
    # int8 codes + one float32 scale per output column for layer 0, float32 for layer 1
    assert got["bytes"] == 64 * 32 + 4 * 32 + 4 * 64 * 32


def _no_constants(name):
    raise ValueError(f"non-standard JSON constant {name}")


def test_results_json_is_standard_json_and_records_the_run():
    r = ev.EvalResult(model="minilm", preset="fp32", description="", metrics={"sqnr": math.inf},
                      storage={"bits_per_weight": math.nan}, layer_sqnr_db=[math.inf, 3.0],
                      trace=[], seconds=0.1, seed=7, batch_size=16)
    data = json.loads(ev.results_json([r]), parse_constant=_no_constants)
    run = data["run"]
    assert {"fpsim", "numpy", "numba", "python", "platform", "cpu_count"} <= set(run["versions"]
                                                                               | run["machine"])
    res = data["results"][0]
    assert res["metrics"]["sqnr"] is None and res["layer_sqnr_db"] == [None, 3.0]
    assert res["seed"] == 7 and res["batch_size"] == 16
