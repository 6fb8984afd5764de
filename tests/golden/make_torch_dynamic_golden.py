"""Make tests/golden/torch_dynamic_int8.npz: PyTorch's dynamic INT8 quantization of Linear.

Run BY HAND, never in CI, and never imported by fpsim (it needs torch).  Same venv as
``make_minilm_golden.py`` (built by it on first use; torch==2.13.0, sentence-transformers)::

    python -m fpsim fetch minilm
    python tests/golden/make_torch_dynamic_golden.py   # re-runs itself in the golden venv

It records what ``torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)``
(the default fbgemm engine) computes, the reference for fpsim's ``torch_dynamic_int8``
preset (``fpsim.models.torch_dynamic_int8_linear``):

* ``case_names``; per case ``{name}_x`` (n, in) float32 inputs, ``{name}_w`` (out, in) and
  ``{name}_b`` (out,) float32 Linear parameters, ``{name}_y`` (n, out) the quantized Linear's
  output, ``{name}_w_scale`` and ``{name}_w_int`` (out, in) int8: torch's quantized weight;
  cases: Gaussian, all-positive and all-negative inputs, an outlier, an all-zero input and
  MiniLM's real layer-0 query weights;
* ``sentences`` and ``embeddings`` (n, 384): ``SentenceTransformer.encode`` of the MiniLM
  model after ``quantize_dynamic`` (every Linear of the encoder), normalized;
* ``versions``.
"""

import json
import os
import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "torch_dynamic_int8.npz"
sys.path.insert(0, str(HERE))

import make_minilm_golden as minilm  # noqa: E402  (the venv, model folder and sentences)


def linear_cases(np, rng, folder):
    from safetensors.numpy import load_file

    def gauss(*shape, s=1.0):
        return (rng.standard_normal(shape) * s).astype(np.float32)

    cases = {}
    w, b = gauss(24, 64, s=0.2), gauss(24, s=0.1)
    cases["gaussian"] = (gauss(16, 64), w, b)
    cases["positive"] = (np.abs(gauss(16, 64)) + np.float32(0.5), w, b)
    cases["negative"] = (-np.abs(gauss(16, 64)) - np.float32(0.1), w, b)
    x = gauss(16, 64)
    x[3, 7] = 40.0
    cases["outlier"] = (x, w, b)
    cases["zeros"] = (np.zeros((4, 64), np.float32), w, b)
    tensors = load_file(str(folder / "model.safetensors"))
    prefix = "" if "encoder.layer.0.attention.self.query.weight" in tensors else "bert."
    wq = tensors[prefix + "encoder.layer.0.attention.self.query.weight"].astype(np.float32)
    bq = tensors[prefix + "encoder.layer.0.attention.self.query.bias"].astype(np.float32)
    cases["minilm_query"] = (gauss(12, wq.shape[1]), wq, bq)
    return cases


def main():
    import numpy as np
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer
    from torch import nn

    torch.manual_seed(0)
    rng = np.random.default_rng(2026)
    arrays = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = minilm.model_folder(pathlib.Path(tmp))
        cases = linear_cases(np, rng, folder)
        for name, (x, w, b) in cases.items():
            lin = nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))
            q = torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear},
                                                       dtype=torch.qint8)
            with torch.no_grad():
                y = q(torch.from_numpy(x)).numpy().astype(np.float32)
            qw = q[0].weight()
            arrays.update({f"{name}_x": x, f"{name}_w": w, f"{name}_b": b, f"{name}_y": y,
                           f"{name}_w_scale": np.float64(qw.q_scale()),
                           f"{name}_w_int": qw.int_repr().numpy().astype(np.int8)})
        st = SentenceTransformer(str(folder), device="cpu")
        qst = torch.ao.quantization.quantize_dynamic(st, {nn.Linear}, dtype=torch.qint8)
        sentences = [s for s in minilm.SENTENCES if s != minilm.LONG]
        emb = qst.encode(sentences, batch_size=1, normalize_embeddings=True,
                         convert_to_numpy=True).astype(np.float32)
    versions = {"torch": torch.__version__, "engine": torch.backends.quantized.engine,
                "sentence_transformers": sentence_transformers.__version__,
                "numpy": np.__version__}
    np.savez_compressed(OUT, case_names=np.array(list(cases)), sentences=np.array(sentences),
                        embeddings=emb, versions=np.array(json.dumps(versions)), **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB): cases {list(cases)}, "
          f"embeddings {emb.shape}; {versions}")


if __name__ == "__main__":
    if os.environ.get("GOLDEN_IN_VENV") != "1":
        py = minilm.VENV / "bin" / "python"
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", GOLDEN_IN_VENV="1")
        if not py.exists():
            sys.exit(f"{py} is missing: run tests/golden/make_minilm_golden.py once first")
        os.execve(str(py), [str(py), str(pathlib.Path(__file__).resolve())], env)
    main()
