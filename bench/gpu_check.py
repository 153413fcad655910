"""GPU check: the real-model path on one H100/H200, in under 8 minutes, printed as one table.

Uses a randomly initialised LLaDA-8B-shaped model in bf16 (real weights cannot be had here; latency and
memory do not depend on them) and the tiny-llada character tokenizer (token ids stay far below the 126k
vocabulary, which does not change the cost). Measures:

1. forward latency at batch 1 and 8 x length 512, and achieved TFLOP/s against the bf16 matmul peak
   measured on the same card in the same run;
2. generation at L=256, block 32, steps 64/128/256, with and without the prefix KV cache, and threshold
   decoding (a random model is never confident, so its NFE is the worst case);
3. one LoRA (r=128, alpha=64) update of LFPO and of diffu-GRPO at G=6, L=256 (rollout included):
   seconds and peak GPU memory.

Run: bash bench/gpu_check.sh   (writes the table to stdout and, with $OUT set, to $OUT/gpu_check.txt)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


SMOKE = os.environ.get("GPU_CHECK_SMOKE") == "1"  # tiny shapes on the CPU: checks the script, measures nothing
DEV = torch.device("cpu" if SMOKE else "cuda")


def cuda_ms(fn, reps: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    if SMOKE:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return 1000 * (time.perf_counter() - t0) / reps
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def matmul_peak() -> float:
    n = 256 if SMOKE else 8192
    a = torch.randn(n, n, device=DEV, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=DEV, dtype=torch.bfloat16)
    ms = cuda_ms(lambda: a @ b, reps=10, warmup=3)
    return 2 * n**3 / (ms / 1e3) / 1e12


def main() -> None:
    from lfpo_bench.models.hf import CachedDiffusionLM, profile_for
    from lfpo_bench.models.llada import LLaDAConfig, LLaDAModelLM
    from lfpo_bench.models.llada.tiny import char_tokenizer
    from lfpo_bench.sampler import generate

    assert SMOKE or torch.cuda.is_available(), "no CUDA device (set GPU_CHECK_SMOKE=1 to check the script on a CPU)"
    dev = DEV
    rows: list[tuple[str, str]] = []
    t_all = time.time()
    peak = matmul_peak()
    rows.append(("card", "CPU smoke run (tiny shapes)" if SMOKE else torch.cuda.get_device_name(0)))
    rows.append(("bf16 matmul peak (8192^3)", f"{peak:.0f} TFLOP/s"))

    tok = char_tokenizer()
    shape = dict(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128, vocab_size=128, embedding_size=128) if SMOKE else {}
    cfg = LLaDAConfig(mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id, **shape)
    torch.manual_seed(0)
    with torch.device(DEV):
        torch.set_default_dtype(torch.float32 if SMOKE else torch.bfloat16)  # bf16 matmuls crawl on a CPU
        model = LLaDAModelLM(cfg)
        torch.set_default_dtype(torch.float32)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    lm = CachedDiffusionLM(model, tok, profile_for("llada", cfg, tok), name="llada-8b-random")
    rows.append(("model", f"LLaDA-8B shape, random bf16, {n_params / 1e9:.2f} B params"))

    # 1. forward latency and achieved TFLOP/s
    with torch.no_grad():
        for B in (1, 8):
            x = torch.randint(0, 100, (B, 512), device=dev)
            ms = cuda_ms(lambda: lm(x, torch.ones_like(x)), reps=5)
            flops = 2 * n_params * B * 512 + 4 * cfg.n_layers * B * 512 * 512 * cfg.d_model
            rows.append((f"forward B={B} x 512", f"{ms:.1f} ms, {flops / (ms / 1e3) / 1e12:.0f} TFLOP/s ({100 * flops / (ms / 1e3) / 1e12 / peak:.0f}% of peak)"))

    # 2. generation
    prompt = torch.randint(0, 100, (1, 64), device=dev)
    am = torch.ones_like(prompt)
    with torch.no_grad():
        for steps in (64, 128, 256):
            for cache in (False, True):
                ms = cuda_ms(lambda: generate(lm, prompt, am, gen_length=256, steps=steps, block_length=32, use_cache=cache), reps=1)
                rows.append((f"generate L=256 b=32 steps={steps} cache={'on' if cache else 'off'}", f"{ms:.0f} ms ({steps} NFE)"))
        g = None
        ms = cuda_ms(lambda: generate(lm, prompt, am, gen_length=256, steps=256, block_length=32, threshold=0.9), reps=1, warmup=0)
        g = generate(lm, prompt, am, gen_length=256, steps=256, block_length=32, threshold=0.9)
        rows.append(("generate L=256 b=32 threshold=0.9", f"{ms:.0f} ms ({g.nfe} NFE; random weights are never confident)"))

    # 3. one LoRA update per method at G=6, L=256
    from lfpo_bench.models.adapters import prepare_for_training
    from lfpo_bench.registry import METHODS, TASKS
    from lfpo_bench.trainer import TrainConfig, Trainer

    tcfg = TrainConfig(updates=1, prompts_per_update=1, group_size=6, micro_batch=6, rollout_gen_length=256, rollout_block_length=32,
                       rollout_steps=128, lora_r=128, lora_alpha=64, lr=3e-6, weight_decay=0.1, grad_clip=0.2, val_limit=1)
    prepare_for_training(lm, tcfg)
    task = TASKS.get("sudoku4")()
    for name, over in (("lfpo", {}), ("diffu_grpo", {"mu": 12})):
        cls = METHODS.get(name)
        method = cls(cls.Config(**over))
        with tempfile.TemporaryDirectory() as d:
            tr = Trainer(lm, task, method, tcfg, d, show_progress=False)
            if not SMOKE:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.time()
            e = tr.step(0)
            peak_mem = 0.0 if SMOKE else torch.cuda.max_memory_allocated() / 2**30
            if not SMOKE:
                torch.cuda.synchronize()
            rows.append((f"LoRA update {name} (G=6, L=256, mu={method.mu})",
                         f"{time.time() - t0:.1f} s (rollout {e['gen_s']:.1f} s), peak {peak_mem:.1f} GiB"))
    rows.append(("total wall time", f"{time.time() - t_all:.0f} s"))

    width = max(len(k) for k, _ in rows)
    text = "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
    print(text, flush=True)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "gpu_check.txt"), "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
