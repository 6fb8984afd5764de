"""Make tests/golden/minilm.npz: all-MiniLM-L6-v2 outputs from sentence-transformers and torch.

Run BY HAND, never in CI, and never imported by fpsim: it needs torch, which fpsim must
not depend on.  It builds its own venv the first time::

    python -m fpsim fetch minilm                  # the model files, into ~/.cache/fpsim/minilm
    python tests/golden/make_minilm_golden.py     # any python >= 3.10; re-runs itself in the venv

which does, if ``$GOLDEN_VENV`` (default ``/tmp/golden-venv``) has no torch::

    python -m venv /tmp/golden-venv
    /tmp/golden-venv/bin/pip install torch==2.13.0          # exactly this pin (CPU wheel)
    /tmp/golden-venv/bin/pip install sentence-transformers transformers   # torch already there

and then runs this script with ``/tmp/golden-venv/bin/python`` and ``HF_HUB_OFFLINE=1``.
No model is downloaded from a hub: the fetched files in ``$FPSIM_CACHE/minilm`` (default
``~/.cache/fpsim/minilm``: config.json, tokenizer.json, model.safetensors) are copied into
a temporary folder laid out as the sentence-transformers model repository (modules.json,
sentence_bert_config.json with max_seq_length 256, 1_Pooling mean pooling, 2_Normalize).

The npz holds, for the fixed ``SENTENCES`` below:

* ``sentences`` (n,) str; ``ids`` (n, T) int32 token ids from the Hugging Face tokenizer as
  sentence-transformers calls it (truncation at 256), right-padded with 0; ``lengths`` (n,);
* ``embeddings`` (n, 384) float32: ``SentenceTransformer.encode(normalize_embeddings=True)``;
* ``hidden_index`` (k,): which sentences have hidden states; ``hidden_states``
  (7, k, Th, 384) float32: transformers' ``BertModel(output_hidden_states=True)`` on
  those k sentences as one padded batch (embeddings' output, then each layer's; padded
  rows zeroed), ``hidden_lengths`` (k,);
* ``versions``: the library versions used.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "minilm.npz"
VENV = pathlib.Path(os.environ.get("GOLDEN_VENV", "/tmp/golden-venv"))
TORCH_PIN = "torch==2.13.0"
MAX_SEQ_LENGTH = 256

LONG = " ".join(f"Paragraph {i}: FP8 formats such as E4M3 and E5M2 trade range for precision, "
                f"and block scaling (MXFP{8 - i % 3 * 2}) recovers some of it."
                for i in range(20))  # about 500 wordpieces: exercises truncation at 256

SENTENCES = [
    "",  # empty: [CLS] [SEP]
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on stage.",
    "Quantization to 8-bit integers cuts memory 4x: 3.14159 ~ pi; 1,000,000 tokens in 2024.",
    "¿Dónde está la biblioteca? Naïve café — résumé, façade, Straße.",
    "日本語のテキストと中文字符 mixed with English 😀🚀",
    "!!! ??? ... --- ;;; ((( ))) [[[ ]]] @#$%^&* \\ / | ~ `",
    "UNCASED? This Model Lower-Cases EVERYTHING, right?",
    "   leading and trailing whitespace\t\n  ",
    ("supercalifragilisticexpialidocious antidisestablishmentarianism "
     "pneumonoultramicroscopicsilicovolcanoconiosis"),
    LONG,
]
#: Sentences whose per-layer hidden states are stored (short ones: keeps the npz small).
HIDDEN_INDEX = [1, 5, 6]


def cache_dir() -> pathlib.Path:
    """fpsim.models.weights.cache_dir, repeated here: this script must not import fpsim."""
    env = os.environ.get("FPSIM_CACHE")
    return (pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "fpsim") / "minilm"


def ensure_venv_and_reexec():
    """Build the golden venv if needed and run this script in it (HF_HUB_OFFLINE=1)."""
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    have = subprocess.run([str(py), "-c", "import torch, sentence_transformers, transformers"],
                          capture_output=True, check=False).returncode == 0
    if not have:
        pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check"]
        subprocess.run(pip + [TORCH_PIN], check=True)
        subprocess.run(pip + ["sentence-transformers", "transformers"], check=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", GOLDEN_IN_VENV="1")
    os.execve(str(py), [str(py), str(pathlib.Path(__file__).resolve())], env)


def model_folder(tmp: pathlib.Path) -> pathlib.Path:
    """A sentence-transformers model folder made of the fetched files."""
    src = cache_dir()
    for f in ("config.json", "tokenizer.json", "model.safetensors"):
        if not (src / f).exists():
            sys.exit(f"{src / f} is missing: run `python -m fpsim fetch minilm` first")
    d = tmp / "all-MiniLM-L6-v2"
    (d / "1_Pooling").mkdir(parents=True)
    (d / "2_Normalize").mkdir()
    for f in ("config.json", "tokenizer.json", "model.safetensors"):
        shutil.copy(src / f, d / f)
    special = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
               "cls_token": "[CLS]", "mask_token": "[MASK]"}
    files = {
        "tokenizer_config.json": dict(special, do_lower_case=True, tokenize_chinese_chars=True,
                                      strip_accents=None, model_max_length=512,
                                      tokenizer_class="BertTokenizer"),
        "special_tokens_map.json": special,
        "sentence_bert_config.json": {"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False},
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling",
             "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize",
             "type": "sentence_transformers.models.Normalize"},
        ],
        "1_Pooling/config.json": {"word_embedding_dimension": 384,
                                  "pooling_mode_cls_token": False,
                                  "pooling_mode_mean_tokens": True,
                                  "pooling_mode_max_tokens": False,
                                  "pooling_mode_mean_sqrt_len_tokens": False},
    }
    for name, content in files.items():
        (d / name).write_text(json.dumps(content, indent=2))
    return d


def main():
    import numpy as np
    import sentence_transformers
    import tokenizers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertModel

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = model_folder(pathlib.Path(tmp))
        st = SentenceTransformer(str(folder), device="cpu")
        assert st.max_seq_length == MAX_SEQ_LENGTH, st.max_seq_length
        emb = st.encode(SENTENCES, batch_size=len(SENTENCES), normalize_embeddings=True,
                        convert_to_numpy=True).astype(np.float32)
        # the ids exactly as sentence-transformers tokenizes (padding=True, truncation at 256)
        preprocess = getattr(st, "preprocess", None) or st.tokenize  # renamed in v6
        feats = preprocess(SENTENCES)
        ids = feats["input_ids"].numpy().astype(np.int32)
        lengths = feats["attention_mask"].numpy().sum(axis=1).astype(np.int32)

        tok = AutoTokenizer.from_pretrained(str(folder))
        bert = BertModel.from_pretrained(str(folder), attn_implementation="eager").eval()
        batch = tok([SENTENCES[i] for i in HIDDEN_INDEX], padding=True, truncation=True,
                    max_length=MAX_SEQ_LENGTH, return_tensors="pt")
        with torch.no_grad():
            out = bert(**batch, output_hidden_states=True)
        mask = batch["attention_mask"].numpy().astype(bool)
        hidden = np.stack([h.numpy() for h in out.hidden_states]).astype(np.float32)
        hidden[:, ~mask] = 0  # padded rows are not compared
        # the same ids from both tokenizer paths
        for j, i in enumerate(HIDDEN_INDEX):
            n = int(mask[j].sum())
            assert (batch["input_ids"][j, :n].numpy() == ids[i, :n]).all()

    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "sentence_transformers": sentence_transformers.__version__,
                "tokenizers": tokenizers.__version__, "numpy": np.__version__}
    np.savez_compressed(
        OUT, sentences=np.array(SENTENCES), ids=ids, lengths=lengths, embeddings=emb,
        hidden_index=np.array(HIDDEN_INDEX, dtype=np.int32), hidden_states=hidden,
        hidden_lengths=mask.sum(axis=1).astype(np.int32),
        versions=np.array(json.dumps(versions)))
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB): {len(SENTENCES)} sentences, "
          f"lengths {lengths.tolist()}, hidden states {hidden.shape}; {versions}")


if __name__ == "__main__":
    if os.environ.get("GOLDEN_IN_VENV") != "1":
        ensure_venv_and_reexec()
    main()
