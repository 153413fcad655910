"""GPU check: the real-model path on one H100/H200, in under 8 minutes, printed as one table.

Uses a randomly initialised LLaDA-8B-shaped model in bf16 (real weights cannot be had here; latency and
memory do not depend on them) and the tiny-llada character tokenizer (token ids stay far below the 126k
vocabulary, which does not change the cost). Measures:

1. forward latency at batch 1 and 8 x length 512, and achieved TFLOP/s against the bf16 matmul peak
   measured on the same card in the same run;
2. correctness of the GPU path in bf16: a prompt alone vs inside a left-padded batch (max |logit diff|,
   argmax agreement), and generation with the prefix KV cache vs full recomputation (token agreement);
3. generation at L=256, block 32, steps 64/128/256, with and without the prefix KV cache, and threshold
   decoding (a random model is never confident, so its NFE is the worst case);
5. a Dream-7B-shaped model (random bf16, the native Dream implementation): forward latency, left-padded vs
   alone, and generation with Dream's own decoding rule (its step schedule, entropy confidence, top-p 0.95);
4. rollout step time over the bare bf16 forward of the same batch shape, for each rollout switch
   (``lfpo_bench/fast_rollout.py``: plain peft, TF32, bf16 autocast, merged adapters, merged + prefix cache),
   then one LoRA (r=128, alpha=64) update of LFPO (plain and merged rollouts) and of diffu-GRPO at G=6, L=256 (rollout included):
   seconds and peak GPU memory. A random model solves nothing, so the rollouts are scored by a stand-in
   reward that varies within each group: every method then runs its full
   update instead of skipping signal-free groups; the reward cycles call by call.

Each section is guarded: a failure prints its error in the table and the next section still runs. The
table is rewritten to ``$OUT/gpu_check.txt`` (when $OUT is set) after every section.

Run: bash bench/gpu_check.sh      CPU check of the script itself: GPU_CHECK_SMOKE=1 python bench/gpu_check.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from lfpo_bench.decoding import Decoding, RolloutConfig  # noqa: E402 - after the source tree is on the path

SMOKE = os.environ.get("GPU_CHECK_SMOKE") == "1"  # tiny shapes on the CPU: checks the script, measures nothing
DEV = torch.device("cpu" if SMOKE else "cuda")
ROWS: list[tuple[str, str]] = []


def sync() -> None:
    if not SMOKE:
        torch.cuda.synchronize()


def cuda_ms(fn, reps: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in ms (CUDA events on the GPU)."""
    for _ in range(warmup):
        fn()
    if SMOKE:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return 1000 * (time.perf_counter() - t0) / reps
    sync()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        sync()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def emit() -> str:
    width = max(len(k) for k, _ in ROWS)
    text = "\n".join(f"{k:<{width}}  {v}" for k, v in ROWS)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "gpu_check.txt"), "w") as f:
            f.write(text + "\n")
    return text


def section(name: str):
    """Decorator: run a section, turn an exception into a FAILED row, rewrite the table file."""

    def wrap(fn):
        def run(*a, **k):
            t0 = time.time()
            try:
                return fn(*a, **k)
            except Exception as e:  # noqa: BLE001 - a GPU check reports every failure and goes on
                traceback.print_exc()
                ROWS.append((f"{name}: FAILED", f"{type(e).__name__}: {str(e)[:160]}"))
            finally:
                print(f"[{name}: {time.time() - t0:.1f} s]", flush=True)
                emit()

        return run

    return wrap


def matmul_peak() -> float:
    n = 256 if SMOKE else 8192
    a = torch.randn(n, n, device=DEV, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=DEV, dtype=torch.bfloat16)
    ms = cuda_ms(lambda: a @ b, reps=10, warmup=3)
    return 2 * n**3 / (ms / 1e3) / 1e12


def build_model():
    from lfpo_bench.models.hf import CachedDiffusionLM, profile_for
    from lfpo_bench.models.llada import LLaDAConfig, LLaDAModelLM
    from lfpo_bench.models.llada.tiny import char_tokenizer

    tok = char_tokenizer()
    shape = dict(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128, vocab_size=128, embedding_size=128) if SMOKE else {}
    cfg = LLaDAConfig(mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id, **shape)
    torch.manual_seed(0)
    with torch.device(DEV):
        torch.set_default_dtype(torch.bfloat16)  # bf16 in the smoke run too, so dtype bugs show up on the CPU
        try:
            model = LLaDAModelLM(cfg)
        finally:
            torch.set_default_dtype(torch.float32)
    model.eval()
    lm = CachedDiffusionLM(model, tok, profile_for("llada", cfg, tok), name="llada-8b-random")
    lm.supports_logits_range = True  # as load_model sets it for the native implementations
    return lm, cfg


@section("forward")
def forward_rows(lm, cfg, peak, n_params):
    with torch.no_grad():
        for B in (1, 8):
            x = torch.randint(0, 100, (B, 512), device=DEV)
            ms = cuda_ms(lambda: lm(x, torch.ones_like(x)), reps=5)  # noqa: B023 - called within this iteration
            flops = 2 * n_params * B * 512 + 4 * cfg.n_layers * B * 512 * 512 * cfg.d_model
            tf = flops / (ms / 1e3) / 1e12
            ROWS.append((f"forward B={B} x 512", f"{ms:.1f} ms, {tf:.0f} TFLOP/s ({100 * tf / peak:.0f}% of peak)"))


@section("correctness")
def correctness_rows(lm):
    from lfpo_bench.sampler import generate

    g = torch.Generator(device="cpu").manual_seed(1)
    with torch.no_grad():
        alone = torch.randint(0, 100, (1, 48), generator=g).to(DEV)
        other = torch.randint(0, 100, (1, 64), generator=g).to(DEV)
        pad = torch.full((1, 16), lm.profile.pad_id, device=DEV, dtype=alone.dtype)
        batch = torch.cat([torch.cat([pad, alone], 1), other], 0)
        am = torch.ones_like(batch)
        am[0, :16] = 0
        la = lm(alone, torch.ones_like(alone)).float()
        lb = lm(batch, am)[0:1, 16:].float()
        diff = (la - lb).abs().max().item()
        agree = (la.argmax(-1) == lb.argmax(-1)).float().mean().item()
        ROWS.append(("left-padded vs alone (bf16)", f"max |logit diff| {diff:.3g}, argmax agreement {100 * agree:.1f}%"))
        prompt = torch.randint(0, 100, (2, 64), generator=g).to(DEV)
        pam = torch.ones_like(prompt)
        a = generate(lm, prompt, pam, Decoding(gen_length=64, steps=32, block_length=32, use_cache=False)).completion
        b = generate(lm, prompt, pam, Decoding(gen_length=64, steps=32, block_length=32, use_cache=True)).completion
        first = (a[:, :32] == b[:, :32]).float().mean().item()
        ROWS.append(("KV cache vs full, greedy (bf16)", f"token agreement {100 * (a == b).float().mean().item():.1f}% "
                     f"(first block {100 * first:.1f}%)"))


@section("generation")
def generation_rows(lm):
    from lfpo_bench.sampler import generate

    prompt = torch.randint(0, 100, (1, 64), device=DEV)
    am = torch.ones_like(prompt)
    with torch.no_grad():
        generate(lm, prompt, am, Decoding(gen_length=256, steps=64, block_length=32, use_cache=True))  # warm-up, both paths
        for steps in (64, 128, 256):
            base = None
            for cache in (False, True):
                ms = cuda_ms(lambda: generate(lm, prompt, am, Decoding(gen_length=256, steps=steps, block_length=32, use_cache=cache)), reps=1, warmup=0)  # noqa: B023 - called within this iteration
                note = f"{ms / base:.2f}x of no-cache" if base else ""
                base = base or ms
                ROWS.append((f"generate L=256 b=32 steps={steps} cache={'on' if cache else 'off'}", f"{ms:.0f} ms ({steps} NFE) {note}".rstrip()))
        prompt8 = torch.randint(0, 100, (8, 64), device=DEV)
        for cache in (False, True):  # a batch of 8 is compute-bound: there the cache's saving shows
            ms = cuda_ms(lambda: generate(lm, prompt8, torch.ones_like(prompt8), Decoding(gen_length=256, steps=64, block_length=32, use_cache=cache)), reps=1, warmup=0)  # noqa: B023 - called within this iteration
            ROWS.append((f"generate B=8 L=256 b=32 steps=64 cache={'on' if cache else 'off'}", f"{ms:.0f} ms (64 NFE)"))
        out = {}
        ms = cuda_ms(lambda: out.setdefault("g", generate(lm, prompt, am, Decoding(gen_length=256, steps=256, block_length=32, threshold=0.9))), reps=1, warmup=0)
        ROWS.append(("generate L=256 b=32 threshold=0.9", f"{ms:.0f} ms ({out['g'].nfe} NFE; random weights are never confident)"))


def varied_reward_task():
    from lfpo_bench.registry import TASKS

    base = TASKS.get("sudoku4")

    class CyclingReward(base):
        """sudoku4 prompts, reward cycling over 0, 0.2, ..., 1 call by call: every group of G>1 carries signal.

        (A random 8B model's tokens lie mostly outside the character tokenizer, so its completions decode to
        the same text and any reward of the text alone would be constant within a group.)"""

        n = 0

        def score(self, ex, completion):
            CyclingReward.n += 1
            return (CyclingReward.n % 6) / 5

    return CyclingReward()


@section("rollout")
def rollout_rows(lm):
    """Rollout step time over the bare bf16 forward of the same batch shape (G=6 x (64 + 256)), per switch."""
    from lfpo_bench.fast_rollout import fast_rollout
    from lfpo_bench.models.adapters import prepare_for_training
    from lfpo_bench.sampler import generate
    from lfpo_bench.trainer import TrainConfig

    prepare_for_training(lm, TrainConfig(lora_r=128, lora_alpha=64))
    with torch.no_grad():  # adapters that do something (B is zero at init)
        for n, p in lm.module.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 1e-3)
    lm.eval()
    prompt = torch.randint(0, 100, (6, 64), device=DEV)
    am = torch.ones_like(prompt)
    with torch.no_grad():
        x = torch.randint(0, 100, (6, 320), device=DEV)
        with lm.module.disable_adapter():
            bare = cuda_ms(lambda: lm(x, torch.ones_like(x)), reps=10, warmup=2)
        ROWS.append(("bare bf16 forward B=6 x 320 (no adapters)", f"{bare:.1f} ms"))
        steps = 16 if SMOKE else 128
        generate(lm, prompt, am, Decoding(gen_length=256, steps=8, block_length=32))  # warm the B=6 shapes once
        for label, kw, cache in (("plain peft", dict(lora="plain"), False),
                                 ("plain + tf32", dict(lora="plain", tf32=True), False),
                                 ("bf16 autocast", dict(lora="bf16"), False),
                                 ("merge (restored exactly)", dict(lora="merge"), False),
                                 ("merge + prefix cache", dict(lora="merge"), True)):
            def run():
                with fast_rollout(lm, RolloutConfig(**kw)):  # noqa: B023 - called within this iteration
                    return generate(lm, prompt, am, Decoding(gen_length=256, steps=steps, block_length=32, temperature=1.0, remasking="random", use_cache=cache), generator=torch.Generator(device=DEV).manual_seed(0))  # noqa: B023 - called within this iteration
            ms = cuda_ms(run, reps=1, warmup=0)
            ROWS.append((f"rollout step, {label}", f"{ms / steps:.1f} ms = {ms / steps / bare:.2f}x bare forward"))
    lm.train()


@section("lora")
def update_rows(lm):
    from lfpo_bench.models.adapters import prepare_for_training
    from lfpo_bench.registry import METHODS
    from lfpo_bench.trainer import TrainConfig, Trainer

    shape = dict(gen_length=256, block_length=32, steps=128)
    base = dict(updates=1, prompts_per_update=1, group_size=6, micro_batch=6, rollout=RolloutConfig(**shape),
                lora_r=128, lora_alpha=64, lr=3e-6, weight_decay=0.1, grad_clip=0.2, val_limit=1)
    if not hasattr(lm.module, "peft_config"):
        prepare_for_training(lm, TrainConfig(**base))
    n_train = sum(p.numel() for p in lm.module.parameters() if p.requires_grad)
    ROWS.append(("LoRA r=128 alpha=64", f"{n_train / 1e6:.0f} M trainable parameters"))
    task = varied_reward_task()
    for name, over, mode in (("lfpo", {}, "plain"), ("lfpo", {}, "merge"), ("diffu_grpo", {"mu": 12}, "merge")):
        cls = METHODS.get(name)
        method = cls(cls.Config(**over))
        tcfg = TrainConfig(**{**base, "rollout": RolloutConfig(**shape, lora=mode)})
        with tempfile.TemporaryDirectory() as d:
            tr = Trainer(lm, task, method, tcfg, d, show_progress=False)
            sync()
            if not SMOKE:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.time()
            e = tr.step(0)
            sync()
            dt = time.time() - t0
            peak_mem = 0.0 if SMOKE else torch.cuda.max_memory_allocated() / 2**30
            ROWS.append((f"LoRA update {name} (G=6, L=256, mu={method.mu}, rollout {mode})",
                         f"{dt:.1f} s (rollout {e['gen_s']:.1f} s, groups used {e.get('groups_used')}, "
                         f"loss {e.get('loss', float('nan')):.3g}), peak {peak_mem:.1f} GiB"))


@section("dream")
def dream_rows():
    from lfpo_bench.models.base import DiffusionLM
    from lfpo_bench.models.dream import DreamConfig, DreamLM
    from lfpo_bench.models.dream.tiny import char_tokenizer
    from lfpo_bench.models.hf import profile_for
    from lfpo_bench.sampler import generate

    tok = char_tokenizer()
    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 vocab_size=128) if SMOKE else {}  # else Dream-v0-7B's shape (Qwen2.5-7B)
    cfg = DreamConfig(mask_token_id=tok.mask_token_id, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.bos_token_id, **shape)
    torch.manual_seed(0)
    with torch.device(DEV):
        torch.set_default_dtype(torch.bfloat16)
        try:
            model = DreamLM(cfg).eval()
        finally:
            torch.set_default_dtype(torch.float32)
    lm = DiffusionLM(model, tok, profile_for("dream", cfg, tok), name="dream-7b-random")
    lm.supports_logits_range = True
    n = sum(p.numel() for p in model.parameters())
    ROWS.append(("Dream model", f"Dream-v0-7B shape, random bf16, {n / 1e9:.2f} B params"))
    g = torch.Generator(device="cpu").manual_seed(2)
    with torch.no_grad():
        for B in (1, 8):
            x = torch.randint(0, 100, (B, 512), device=DEV)
            ms = cuda_ms(lambda: lm(x, torch.ones_like(x)), reps=5)  # noqa: B023 - called within this iteration
            ROWS.append((f"Dream forward B={B} x 512", f"{ms:.1f} ms"))
        alone = torch.randint(0, 100, (1, 48), generator=g).to(DEV)
        other = torch.randint(0, 100, (1, 64), generator=g).to(DEV)
        batch = torch.cat([torch.cat([torch.full((1, 16), lm.profile.pad_id, device=DEV, dtype=alone.dtype), alone], 1), other])
        am = torch.ones_like(batch)
        am[0, :16] = 0
        la = lm(alone, torch.ones_like(alone)).float()[:, 1:]
        lb = lm(batch, am)[0:1, 17:].float()
        ROWS.append(("Dream left-padded vs alone (bf16)", f"max |logit diff| {(la - lb).abs().max().item():.3g}, "
                     f"argmax agreement {100 * (la.argmax(-1) == lb.argmax(-1)).float().mean().item():.1f}%"))
        prompt = torch.randint(0, 100, (1, 64), device=DEV)
        kw = dict(gen_length=256, steps=256, block_length=256, temperature=0.2, top_p=0.95, remasking="entropy", schedule="dream")
        ms = cuda_ms(lambda: generate(lm, prompt, torch.ones_like(prompt), Decoding(**kw), generator=torch.Generator(device=DEV).manual_seed(0)),
                     reps=1, warmup=1)
        ROWS.append(("Dream generate L=256 steps=256 (its own rule)", f"{ms:.0f} ms (256 NFE)"))


def main() -> None:
    assert SMOKE or torch.cuda.is_available(), "no CUDA device (set GPU_CHECK_SMOKE=1 to check the script on a CPU)"
    t_all = time.time()
    ROWS.append(("card", "CPU smoke run (tiny shapes)" if SMOKE else torch.cuda.get_device_name(0)))
    ROWS.append(("torch / transformers", f"{torch.__version__} / {__import__('transformers').__version__}"))
    peak = matmul_peak()
    ROWS.append(("bf16 matmul peak (8192^3)", f"{peak:.0f} TFLOP/s"))
    lm, cfg = build_model()
    n_params = sum(p.numel() for p in lm.module.parameters())
    ROWS.append(("model", f"LLaDA-8B shape, random bf16, {n_params / 1e9:.2f} B params"))
    emit()
    forward_rows(lm, cfg, peak, n_params)
    correctness_rows(lm)
    generation_rows(lm)
    rollout_rows(lm)
    update_rows(lm)
    del lm
    if not SMOKE:
        torch.cuda.empty_cache()
    dream_rows()
    ROWS.append(("total wall time", f"{time.time() - t_all:.0f} s"))
    print("\n" + emit(), flush=True)


if __name__ == "__main__":
    main()
