"""Greedy-token agreement between moestream and llama.cpp's `llama-server` on the same GGUF files.

For each tiny test model (mixtral, qwen2moe, qwen3moe, olmoe; see tests/fixtures/tiny_models.py) it takes the
F32 GGUF, the converter's Q8_0 GGUF, and Q4_0 and Q4_K_M files made from the F32 one by `llama-quantize`
(cached in --work-dir; the tiny models' 64-wide rows make llama-quantize fall back from K-quants, which is
reported). For each file it starts `llama-server` on 127.0.0.1 (free port, -c 512, -t 2, --temp 0), sends a
fixed prompt as token ids to `/completion` (greedy: temperature 0, top_k 1, samplers ["top_k"],
cache_prompt false, return_tokens true, n_probs 5), and compares the returned ids with moestream's greedy
tokens for the same prompt ids (both stop early only on an end-of-generation token). Reported per file:
- free-running: the number of leading identical tokens and of identical tokens position by position;
- teacher-forced: in one moestream pass over the prompt + llama.cpp's tokens, at how many steps moestream's
  argmax is llama.cpp's token; at each other step the top-1 margins in llama.cpp (from its top-5 log-probs)
  and in moestream (logits), and moestream's smallest router margin (last chosen vs first unchosen expert
  probability, over layers), to tell near-ties (output or routing) from real differences.
The first teacher-forced mismatch is (up to batch-vs-step rounding) where free-running generation diverged.
Prints a table and writes JSON.

`--gguf FILE` (repeatable) compares given files instead of the tiny models, e.g. a file made by
`moestream synth`.

Reproduce (from the repository root; the tiny models are built on first use by the test fixtures):
    PYTHONPATH=. python bench/llama_agreement.py --llama-bin /root/cache/llama-build/bin \\
        --json /root/cache/bench/llama_agreement.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moestream.engine import GREEDY, Engine, EngineConfig  # noqa: E402
from moestream.engine.sequence import new_sequence  # noqa: E402
from moestream.formats.gguf import GGUFFile  # noqa: E402
from moestream.layers.attention import Segment  # noqa: E402
from moestream.tokenizer import Tokenizer  # noqa: E402

ARCHS = ("mixtral", "qwen2moe", "qwen3moe", "olmoe")
QUANTIZED = {"q4_0": "Q4_0", "q4_k_m": "Q4_K_M"}  # variant -> llama-quantize type
PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time, in a small village by the sea,"
DEFAULT_BIN = "/root/cache/llama-build/bin"
CTX = 512
N_PROBS = 5
START_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 300.0


@dataclass
class Mismatch:
    """A step where moestream's argmax, given llama.cpp's tokens so far, differs from llama.cpp's token."""

    step: int
    ours: int
    llama: int
    llama_margin: float | None  # llama.cpp: logprob(its token) - logprob(ours); None if ours is not in its top-N
    ours_margin: float  # moestream: logit(ours) - logit(llama's token)
    router_margin: float  # moestream: min over layers of p(k-th expert) - p(k+1-th expert), k = experts used
    llama_top: list[tuple[int, float]]  # llama.cpp's top-N (id, logprob) at that step ([] if it gave none)


@dataclass
class Result:
    name: str
    path: str
    tensor_types: dict[str, int]
    prompt_ids: list[int]
    ours: list[int]
    llama: list[int]
    leading: int  # free-running: leading identical tokens
    identical: int  # free-running: identical tokens position by position
    teacher_forced: int  # steps where our argmax on llama.cpp's prefix equals llama.cpp's token
    mismatches: list[Mismatch]  # the other steps (the first is where free-running generation diverged)
    drift: dict[str, float]  # teacher-forced |log-prob difference| over llama.cpp's top-N (see logprob_drift)
    quantize: dict | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # set when llama.cpp or moestream failed on this file


# ---- llama.cpp binaries -------------------------------------------------------------------------------


def llama_bin_dir(arg: str | None) -> Path:
    path = Path(arg or os.environ.get("LLAMA_CPP_BIN") or DEFAULT_BIN)
    for tool in ("llama-server", "llama-quantize"):
        if not (path / tool).is_file():
            raise SystemExit(f"{path / tool} not found: pass --llama-bin or set LLAMA_CPP_BIN")
    return path


def quantize(bin_dir: Path, src: Path, dst: Path, qtype: str) -> dict:
    """`llama-quantize src dst qtype` unless dst exists; returns the fallbacks it logged."""
    log = dst.with_suffix(".quantize.log")
    if not (dst.exists() and log.exists()):
        tmp = dst.with_suffix(".tmp")
        cmd = [str(bin_dir / "llama-quantize"), str(src), str(tmp), qtype, "2"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"llama-quantize failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        log.write_text(proc.stdout + proc.stderr)
        tmp.rename(dst)
    return {"type": qtype, "fallbacks": parse_fallbacks(log.read_text())}


FALLBACK_RE = re.compile(r"warning: (\S+)\s+- ncols\s+(\d+) not divisible by\s+(\d+) \(required for type\s+(\S+)\)"
                         r".*?-> falling back to\s+(\S+)")


def parse_fallbacks(log: str) -> list[dict]:
    return [dict(tensor=m[1], ncols=int(m[2]), wanted=m[4], used=m[5]) for m in FALLBACK_RE.finditer(log)]


def tensor_types(path: Path) -> dict[str, int]:
    return dict(Counter(info.qtype.name for info in GGUFFile(path).tensors.values()))


# ---- llama-server ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """`llama-server` on a free local port for the duration of a `with` block; always stopped on exit."""

    def __init__(self, bin_dir: Path, model: Path, log_path: Path, threads: int = 2):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.cmd = [str(bin_dir / "llama-server"), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port),
                    "-c", str(CTX), "-t", str(threads), "-tb", str(threads), "-np", "1", "--temp", "0",
                    "--no-webui", "--no-warmup"]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "LlamaServer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or 503 while loading
            time.sleep(0.2)
        raise TimeoutError(f"llama-server not ready after {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def complete(self, prompt_ids: list[int], n_predict: int) -> dict:
        body = dict(prompt=prompt_ids, n_predict=n_predict, temperature=0.0, top_k=1, samplers=["top_k"],
                    cache_prompt=False, return_tokens=True, n_probs=N_PROBS, stream=False)
        req = urllib.request.Request(self.url + "/completion", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as r:
            return json.loads(r.read())


def llama_tokens(bin_dir: Path, model: Path, prompt_ids: list[int], n_predict: int, log_path: Path,
                 token_bytes) -> tuple[list[int], list[list[tuple[int, float]] | None]]:
    """Greedy ids from llama-server and, per step, its top-N [(id, logprob)] (None where it gave none)."""
    with LlamaServer(bin_dir, model, log_path) as server:
        reply = server.complete(prompt_ids, n_predict)
    tokens = list(reply["tokens"])
    return tokens, align_probs(tokens, reply.get("completion_probabilities", []), token_bytes)


def align_probs(tokens: list[int], entries: list[dict], token_bytes) -> list[list[tuple[int, float]] | None]:
    """llama-server gives no probability entry for a token after which the generated text ends inside a UTF-8
    character (byte-level BPE pieces), so `entries` can be shorter than `tokens`: put each entry at its step."""
    steps, text = [], b""
    for i, tok in enumerate(tokens):
        text += token_bytes(tok)
        if not ends_inside_utf8_char(text):
            steps.append(i)
    out: list[list[tuple[int, float]] | None] = [None] * len(tokens)
    if len(steps) != len(entries) or any(tokens[i] != e["id"] for i, e in zip(steps, entries)):
        return out  # could not place them: no llama.cpp probabilities rather than wrong ones
    for i, e in zip(steps, entries):
        out[i] = [(p["id"], p["logprob"]) for p in e["top_logprobs"]]
    return out


def ends_inside_utf8_char(text: bytes) -> bool:
    """True if one of the last 3 bytes starts a UTF-8 sequence longer than the bytes left after it."""
    for back in range(1, min(3, len(text)) + 1):
        byte = text[-back]
        needed = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4 if byte >> 3 == 0b11110 else 0
        if needed > back:
            return True
    return False


# ---- moestream --------------------------------------------------------------------------------------------


def open_engine(path) -> Engine:
    return Engine.open(path, EngineConfig(context_length=CTX, progress=False))


def our_tokens(engine: Engine, prompt_ids: list[int], n_predict: int, stop_ids: set[int]) -> list[int]:
    return [ev.token for ev in engine.generate(prompt_ids, GREEDY, n_predict, frozenset(stop_ids))]


class RecordingRouter:
    """Wraps a Router and keeps the router probabilities of the last call, for near-tie analysis."""

    def __init__(self, router):
        self.router, self.probs = router, None

    def __call__(self, x: torch.Tensor):
        self.probs = self.router.selection_probs(x)
        return self.router(x)

    def route(self, x: torch.Tensor):
        self.probs = self.router.selection_probs(x)
        return self.router.route(x)

    def __getattr__(self, name: str):  # k, gate_inp, ... of the wrapped router
        return getattr(self.router, name)


def record_routers(model) -> list[RecordingRouter]:
    recorders = []
    for block in model.blocks:
        if hasattr(block.ffn, "router"):
            block.native_ffn = None  # the native step routes in C; the PyTorch path is where the router is seen
            block.ffn.router = RecordingRouter(block.ffn.router)
            recorders.append(block.ffn.router)
    return recorders


@torch.inference_mode()
def teacher_forced(model, prompt_ids: list[int], tokens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over prompt + tokens[:-1]: logits [N, V] predicting each of `tokens`, and the router margin
    [N] (min over layers of the gap between the last chosen and the first unchosen expert's probability)."""
    ids = prompt_ids + tokens[:-1]
    recorders = record_routers(model)
    seq = new_sequence(model, ids, CTX)
    hidden = model.forward(torch.tensor(ids), [Segment(0, len(ids), torch.arange(len(ids)), seq.kv)])
    rows = slice(len(prompt_ids) - 1, len(ids))
    logits = model.logits(hidden[rows])
    k = model.args.n_experts_used
    margins = [torch.sort(r.probs[rows], dim=-1, descending=True).values for r in recorders]
    margin = torch.stack([p[:, k - 1] - p[:, k] for p in margins]).min(dim=0).values
    return logits, margin


def mismatches(logits: torch.Tensor, router_margin: torch.Tensor, llama: list[int], tops) -> list[Mismatch]:
    out = []
    for step, want in enumerate(llama):
        ours = int(torch.argmax(logits[step]))
        if ours == want:
            continue
        top = tops[step] or []
        logprob = dict(top)
        llama_margin = logprob[want] - logprob[ours] if ours in logprob and want in logprob else None
        out.append(Mismatch(step, ours, want, llama_margin, float(logits[step, ours] - logits[step, want]),
                            float(router_margin[step]), top))
    return out


def logprob_drift(logits: torch.Tensor, router_margin: torch.Tensor, tops) -> dict[str, float]:
    """|moestream log-prob - llama.cpp log-prob| over llama.cpp's top-N tokens, at the (teacher-forced) steps
    where llama.cpp gave probabilities: mean, max, the step of the max and moestream's router margin there."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    diffs = [(abs(float(logprobs[step, tok]) - lp), step) for step, top in enumerate(tops) if top for tok, lp in top]
    out = {"steps": sum(top is not None for top in tops)}
    if diffs:
        worst, step = max(diffs)
        out.update(mean_abs=round(sum(d for d, _ in diffs) / len(diffs), 4), max_abs=round(worst, 4),
                   max_step=step, max_step_router_margin=round(float(router_margin[step]), 4))
    return out


# ---- comparison -------------------------------------------------------------------------------------------


def leading_identical(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def identical_positions(a: list[int], b: list[int]) -> int:
    return sum(x == y for x, y in zip(a, b))


def compare_file(name: str, path: Path, bin_dir: Path, n_predict: int, work_dir: Path,
                 quantize_info: dict | None = None) -> Result:
    tok = Tokenizer.from_gguf(path)
    prompt_ids = tok.encode(PROMPT)
    t0 = time.perf_counter()
    log = work_dir / "logs" / f"{name}.server.log"
    llama, tops = llama_tokens(bin_dir, path, prompt_ids, n_predict, log, tok.token_bytes)
    t1 = time.perf_counter()
    try:
        engine = open_engine(path)
    except Exception as exc:
        msg = f"moestream Engine.open failed ({type(exc).__name__}: {exc}); llama.cpp gave {llama}"
        raise RuntimeError(msg) from exc
    ours = our_tokens(engine, prompt_ids, n_predict, set(tok.eog_ids))
    t2 = time.perf_counter()
    logits, router_margin = teacher_forced(engine.model, prompt_ids, llama)
    engine.close()
    bad = mismatches(logits, router_margin, llama, tops)
    drift = logprob_drift(logits, router_margin, tops)
    return Result(name, str(path), tensor_types(path), prompt_ids, ours, llama, leading_identical(ours, llama),
                  identical_positions(ours, llama), len(llama) - len(bad), bad, drift, quantize_info,
                  {"llama": round(t1 - t0, 2), "moestream": round(t2 - t1, 2)})


def failed(name: str, path: Path, quantize_info: dict | None, exc: BaseException) -> Result:
    error = f"{type(exc).__name__}: {exc}".strip()[:1000]
    types = tensor_types(path) if path.exists() else {}
    return Result(name, str(path), types, [], [], [], 0, 0, 0, [], {}, quantize_info, error=error)


def tiny_model_files(arch: str, bin_dir: Path, work_dir: Path) -> list[tuple[str, Path, dict | None]]:
    """(variant, path, quantize info) for the F32, converter Q8_0, and llama-quantize'd files of `arch`."""
    from tests.fixtures.tiny_models import gguf_path

    f32 = gguf_path(arch, "f32")
    files = [("f32", f32, None), ("q8_0", gguf_path(arch, "q8_0"), None)]
    for variant, qtype in QUANTIZED.items():
        dst = work_dir / f"{f32.parent.name}-{variant}.gguf"  # the parent folder name carries the config hash
        files.append((variant, dst, quantize(bin_dir, f32, dst, qtype)))
    return files


# ---- report -----------------------------------------------------------------------------------------------


def fmt_margin(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def print_table(results: list[Result]) -> None:
    head = (f"{'file':<16} {'tensor types':<34} {'lead':>5} {'same':>6} {'forced':>6} {'drift mean/max@step':>20} "
            f"{'router':>7}  first forced mismatch")
    print(head)
    print("-" * (len(head) + 60))
    for r in results:
        types = ",".join(f"{k}:{v}" for k, v in sorted(r.tensor_types.items()))
        if r.error:
            print(f"{r.name:<16} {types:<34} FAILED: {r.error.splitlines()[0][:200]}")
            continue
        n = max(len(r.ours), len(r.llama))
        d = r.drift
        drift = f"{d['mean_abs']:.3f}/{d['max_abs']:.3f}@{d['max_step']}" if "mean_abs" in d else "-"
        router = f"{d['max_step_router_margin']:.4f}" if "mean_abs" in d else "-"
        print(f"{r.name:<16} {types:<34} {r.leading:>5} {r.identical:>3}/{n:<2} "
              f"{r.teacher_forced:>3}/{len(r.llama):<2} {drift:>20} {router:>7}  "
              + (describe(r.mismatches[0]) if r.mismatches else "-"))
    print(LEGEND)


LEGEND = """\
lead/same: free-running greedy, leading / position-wise identical tokens.
forced: steps where moestream's argmax, on llama.cpp's own tokens so far, is llama.cpp's token.
drift: mean and max |log-prob difference| over llama.cpp's top-5 tokens, at the forced steps where llama-server
  gave probabilities (none for a token that ends inside a UTF-8 character), and the step of the max;
  router: moestream's router margin at that step.
mismatch: step ours/llama; llama gap = logprob difference in llama.cpp (- if ours is not in its top-5 or it
  gave none), our gap = logit difference in moestream, router = smallest gap over layers between the last
  chosen and the first unchosen expert's router probability (a routing near-tie when close to 0)."""


def describe(m: Mismatch) -> str:
    return (f"step {m.step}: {m.ours}/{m.llama} llama gap {fmt_margin(m.llama_margin)} our gap {m.ours_margin:.3f} "
            f"router {m.router_margin:.4f}")


def print_mismatches(results: list[Result]) -> None:
    for r in results:
        for m in r.mismatches[1:]:
            print(f"{r.name}: also {describe(m)}")


def print_fallbacks(results: list[Result]) -> None:
    for r in results:
        if r.quantize and r.quantize["fallbacks"]:
            used = Counter(f"{f['wanted']}->{f['used']} (ncols {f['ncols']})" for f in r.quantize["fallbacks"])
            print(f"{r.name}: llama-quantize {r.quantize['type']} fell back for "
                  f"{len(r.quantize['fallbacks'])} tensors: " + "; ".join(f"{k} x{v}" for k, v in used.items()))


def write_json(results: list[Result], path: Path, bin_dir: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"prompt": PROMPT, "llama_bin": str(bin_dir), "results": [asdict(r) for r in results]}
    path.write_text(json.dumps(doc, indent=1))
    print(f"wrote {path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llama-bin", default=None,
                   help=f"folder with llama-server and llama-quantize (default: $LLAMA_CPP_BIN, else {DEFAULT_BIN})")
    p.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS), help="tiny models to test")
    p.add_argument("--gguf", type=Path, action="append", default=None,
                   help="compare this GGUF instead of the tiny models (repeatable)")
    p.add_argument("--n-predict", type=int, default=32, help="tokens to generate (default 32)")
    p.add_argument("--work-dir", type=Path, default=Path("/root/cache/bench/agreement"),
                   help="quantized files and server logs go here (default /root/cache/bench/agreement)")
    p.add_argument("--json", type=Path, default=Path("/root/cache/bench/llama_agreement.json"),
                   help="where to write the results (default /root/cache/bench/llama_agreement.json)")
    p.add_argument("--torch-threads", type=int, default=1, help="torch threads for moestream (default 1)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    bin_dir = llama_bin_dir(args.llama_bin)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.gguf:
        jobs = [(p.stem, p, None) for p in args.gguf]
    else:
        jobs = [(f"{arch}/{variant}", path, q) for arch in args.archs
                for variant, path, q in tiny_model_files(arch, bin_dir, args.work_dir)]
    results = []
    for name, path, q in jobs:
        try:
            results.append(compare_file(name, path, bin_dir, args.n_predict, args.work_dir, q))
        except Exception as exc:  # report and go on with the other files
            results.append(failed(name, path, q, exc))
            print(f"{name}: FAILED: {results[-1].error}", flush=True)
            continue
        r = results[-1]
        print(f"{name}: leading {r.leading}, identical {r.identical}/{max(len(r.ours), len(r.llama))}, "
              f"teacher-forced {r.teacher_forced}/{len(r.llama)}", flush=True)
    print()
    print_table(results)
    print_mismatches(results)
    print_fallbacks(results)
    write_json(results, args.json, bin_dir)


if __name__ == "__main__":
    main()
