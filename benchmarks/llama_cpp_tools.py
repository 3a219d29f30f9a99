#!/usr/bin/env python3
"""llama.cpp's side of benchmarks/llama_cpp_side_by_side.py, run by a Python that has llama-cpp-python (and,
for `convert`, transformers 4.x): this file imports nothing from the project.

    PY llama_cpp_tools.py convert LLAMA_CPP_DIR HF_DIR OUT.gguf      llama.cpp's own convert_hf_to_gguf.py, f32
    PY llama_cpp_tools.py quantize IN.gguf OUT.gguf q4_0               llama.cpp's own quantizer (llama_model_quantize)
    PY llama_cpp_tools.py worker MODEL.gguf THREADS [flash-attn]       timing worker: JSON commands on stdin

The worker reads {"prompt": [ids], "new": n} lines and answers {"tokens": [...], "times": [prefill s, step s,
...], "wall": s} lines: greedy decoding, one llama_eval per step, as the project's generation loop runs
its steps (prompt in one call, then one token per call).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def convert(llama_cpp: str, hf_dir: str, out: str) -> None:
    """convert_hf_to_gguf.py as shipped, with one allowance: a tokenizer trained locally (random-weights
    folders) has a byte-level BPE pre-tokenizer whose hash is in no table of the converter's, which it
    would refuse; it is told "gpt-2" (byte-level BPE, which it is). Prompts are fed as ids, so the
    tokenizer never affects a timing."""
    root = Path(llama_cpp)
    sys.path[:0] = [str(root / "gguf-py"), str(root)]
    import conversion.base as base

    named = base.TextModel.get_vocab_base_pre

    def pre_tokenizer(self, tokenizer):
        try:
            return named(self, tokenizer)
        except NotImplementedError:
            return "gpt-2"

    base.TextModel.get_vocab_base_pre = pre_tokenizer
    import convert_hf_to_gguf

    sys.argv = [str(root / "convert_hf_to_gguf.py"), hf_dir, "--outfile", out, "--outtype", "f32"]
    convert_hf_to_gguf.main()


def quantize(source: str, out: str, kind: str) -> None:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}[kind]
    params.nthread = 2
    if llama_cpp.llama_model_quantize(source.encode(), out.encode(), ctypes.byref(params)) != 0:
        raise SystemExit(f"llama_model_quantize failed for {source}")


def worker(model: str, threads: str, flags: str = "") -> None:
    import numpy as np
    import llama_cpp

    llm = llama_cpp.Llama(model_path=model, n_threads=int(threads), n_threads_batch=int(threads), n_ctx=2048,
                          n_batch=512, n_ubatch=512, flash_attn=flags == "flash-attn", verbose=False)
    vocab = llm.n_vocab()
    print(json.dumps({"ready": True, "llama_cpp_python": llama_cpp.__version__}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        llm.reset()
        tokens, times, feed = [], [], list(command["prompt"])
        start = time.perf_counter()
        for _ in range(command["new"]):
            step = time.perf_counter()
            llm.eval(feed)
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,))
            feed = [int(logits.argmax())]
            times.append(time.perf_counter() - step)
            tokens.append(feed[0])
        print(json.dumps({"tokens": tokens, "times": times, "wall": time.perf_counter() - start}), flush=True)


if __name__ == "__main__":
    {"convert": convert, "quantize": quantize, "worker": worker}[sys.argv[1]](*sys.argv[2:])
