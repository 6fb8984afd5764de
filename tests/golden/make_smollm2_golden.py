"""Make tests/golden/smollm2.npz: Hugging Face transformers' reference run of SmolLM2.

Run BY HAND, never in CI, and never imported by fpsim.  It loads the SAME GGUF file fpsim
loads (SmolLM2-135M-Instruct.Q4_1.gguf) with transformers, which dequantizes it to float32
with the `gguf` package, so the reference sits on the same Q4_1 weights as fpsim's FP32 run.

Setup (a separate venv: torch is never a dependency of fpsim)::

    python3 -m venv /tmp/golden-venv
    /tmp/golden-venv/bin/pip install torch==2.13.0            # exactly this pin
    /tmp/golden-venv/bin/pip install transformers gguf accelerate   # torch already present
    python -m fpsim fetch smollm2        # in fpsim's own venv: the GGUF into ~/.cache/fpsim
    HF_HUB_OFFLINE=1 /tmp/golden-venv/bin/python tests/golden/make_smollm2_golden.py

(transformers refuses to load a GGUF file without `accelerate`.)  The cache directory is
``$FPSIM_CACHE`` or ``~/.cache/fpsim``; the script checks the file's SHA-256.

What it writes (all arrays, no pickles; < 5 MB):

* ``texts`` (str), ``text_ids`` (int64, concatenated) and ``text_offsets``: token ids of
  a few fixed texts from ``AutoTokenizer.from_pretrained(folder, gguf_file=...)``
  (digits, unicode, whitespace runs, special tokens, code, the empty text);
* ``seq_ids`` (64,): one chat-template-free English passage, its first 64 tokens;
* ``argmax`` (64,), ``topk_ids``/``topk_logits`` (64, 32), ``logsumexp`` (64,) and
  ``logits_rows`` with ``logits_full`` (len(rows), vocab): float32 logits of that sequence
  (the full 64 x 49152 would be 12 MB);
* ``token_losses`` (63,) and ``perplexity``: next-token cross-entropy (float64 from the
  float32 logits) over positions 1..63 and its exp(mean);
* ``hidden_layers`` and ``hidden`` (len, 64, 576): HF's ``hidden_states[i]`` (the input of
  layer i; 0 = embeddings) for a few layers;
* ``gen_prompt_ids_<j>``, ``gen_new_ids_<j>``: greedy ``generate`` of 16 new tokens;
* ``meta``: JSON with versions, the GGUF SHA-256 and the attention implementation.
"""

import hashlib
import json
import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
OUT = pathlib.Path(__file__).with_name("smollm2.npz")

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Digits: 12345 + 678 = 13023, pi is 3.14159, and 1,000,000 in 2024-11-24.",
    "  leading spaces,\ttabs\t\tand\n\nnewlines   and trailing spaces   ",
    ("Unicode: héllo wörld, naïve café, 日本語のテキスト, Ελληνικά, "
     "emoji 🙂🚀 and ß."),
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "def square(x):\n    return x ** 2  # four spaces of indent\n",
    "",
]

PASSAGE = (
    "The Industrial Revolution began in Great Britain in the second half of the eighteenth "
    "century and spread to continental Europe and North America over the following decades. "
    "Steam engines, first used to pump water out of coal mines, soon powered textile mills, "
    "railways and ships. Cities grew quickly as families left their farms to look for work "
    "in the new factories, where the hours were long and the conditions were often harsh."
)
SEQ_LEN = 64
TOPK = 32
LOGITS_ROWS = [0, 1, 2, 31, 62, 63]
HIDDEN_LAYERS = [0, 1, 15, 29]
GEN_PROMPTS = ["The capital of France is", "Once upon a time, in a small village by the sea,"]
GEN_NEW = 16


def gguf_folder() -> pathlib.Path:
    env = os.environ.get("FPSIM_CACHE")
    root = pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "fpsim"
    folder = root / "smollm2"
    path = folder / GGUF_NAME
    if not path.exists():
        sys.exit(f"{path} is missing: run `python -m fpsim fetch smollm2` in fpsim's venv")
    h = hashlib.sha256(path.read_bytes()).hexdigest()
    if h != GGUF_SHA256:
        sys.exit(f"{path} has SHA-256 {h}, expected {GGUF_SHA256}: fetch it again")
    return folder


def main():
    import gguf
    import tokenizers
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    folder = gguf_folder()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME,
                                                 dtype=torch.float32)
    model.eval()
    n_layer = model.config.num_hidden_layers

    out = {}
    ids = [tok(t)["input_ids"] for t in TEXTS]
    for t, i in zip(TEXTS, ids):
        assert i == tok(t, add_special_tokens=False)["input_ids"], "a BOS was added"
        print(f"{t!r:.60} -> {i[:12]}{'...' if len(i) > 12 else ''}")
    out["texts"] = np.array(TEXTS)
    out["text_ids"] = np.array([x for i in ids for x in i], dtype=np.int64)
    out["text_offsets"] = np.cumsum([0] + [len(i) for i in ids]).astype(np.int64)

    seq = tok(PASSAGE)["input_ids"]
    assert len(seq) >= SEQ_LEN, len(seq)
    seq = seq[:SEQ_LEN]
    out["seq_ids"] = np.array(seq, dtype=np.int64)
    with torch.no_grad():
        res = model(torch.tensor([seq]), output_hidden_states=True, use_cache=False)
    logits = res.logits[0].float().numpy()  # [T, V] float32
    assert logits.dtype == np.float32
    top = np.argsort(-logits, axis=-1, kind="stable")[:, :TOPK]
    out["argmax"] = logits.argmax(-1).astype(np.int64)
    out["topk_ids"] = top.astype(np.int64)
    out["topk_logits"] = np.take_along_axis(logits, top, -1)
    out["logits_rows"] = np.array(LOGITS_ROWS, dtype=np.int64)
    out["logits_full"] = logits[LOGITS_ROWS]
    z = logits.astype(np.float64)
    m = z.max(-1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(-1)) + m[:, 0]
    out["logsumexp"] = lse
    losses = lse[:-1] - z[np.arange(SEQ_LEN - 1), seq[1:]]
    out["token_losses"] = losses
    out["perplexity"] = np.float64(np.exp(losses.mean()))
    torch_losses = torch.nn.functional.cross_entropy(res.logits[0, :-1].double(),
                                                     torch.tensor(seq[1:])).item()
    assert abs(torch_losses - losses.mean()) < 1e-9, (torch_losses, losses.mean())
    hs = res.hidden_states
    assert len(hs) == n_layer + 1
    out["hidden_layers"] = np.array(HIDDEN_LAYERS, dtype=np.int64)
    out["hidden"] = np.stack([hs[i][0].float().numpy() for i in HIDDEN_LAYERS])
    gaps = np.sort(logits, -1)[:, -1] - np.sort(logits, -1)[:, -2]
    print(f"perplexity {out['perplexity']:.6f}; smallest top-1/top-2 logit gap {gaps.min():.5f}")

    for j, prompt in enumerate(GEN_PROMPTS):
        p = tok(prompt)["input_ids"]
        with torch.no_grad():
            g = model.generate(torch.tensor([p]), max_new_tokens=GEN_NEW, do_sample=False,
                               num_beams=1, pad_token_id=tok.pad_token_id,
                               eos_token_id=model.config.eos_token_id)
        new = g[0, len(p):].tolist()
        print(f"generate {prompt!r} -> {tok.decode(new)!r}")
        out[f"gen_prompt_ids_{j}"] = np.array(p, dtype=np.int64)
        out[f"gen_new_ids_{j}"] = np.array(new, dtype=np.int64)

    meta = {
        "gguf": GGUF_NAME, "gguf_sha256": GGUF_SHA256, "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gguf_package": getattr(gguf, "__version__", None) or _version("gguf"),
        "tokenizers": tokenizers.__version__, "numpy": np.__version__,
        "python": sys.version.split()[0],
        "attn_implementation": model.config._attn_implementation,
        "passage": PASSAGE, "gen_prompts": GEN_PROMPTS, "generation": "greedy, do_sample=False",
    }
    out["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")
    print(json.dumps({k: v for k, v in meta.items() if k != "passage"}, indent=1))


def _version(pkg):
    from importlib.metadata import version

    return version(pkg)


if __name__ == "__main__":
    main()
