"""Where does a GPU rollout step go? LLaDA-8B shape (random bf16), B=6 x (64 + 256) tokens, as in gpu_check's
LoRA update. Prints ms per forward / per sampler step with and without LoRA (eval and train mode), then the
top operators of one LoRA rollout by CUDA and by CPU time (torch.profiler).

Run: python bench/gpu_profile_rollout.py    (GPU_CHECK_SMOKE=1 for tiny shapes on a CPU)
"""

from __future__ import annotations

import os
import sys

import torch

from lfpo_bench.decoding import Decoding

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_check as gc  # noqa: E402


def main() -> None:
    from lfpo_bench.models.adapters import prepare_for_training
    from lfpo_bench.sampler import generate
    from lfpo_bench.trainer import TrainConfig

    lm, cfg = gc.build_model()
    dev = gc.DEV
    ids = torch.randint(0, 100, (6, 64), device=dev)
    am = torch.ones_like(ids)
    full = torch.randint(0, 100, (6, 320), device=dev)
    steps = 16

    def gens():
        return [torch.Generator(device=dev).manual_seed(i) for i in range(6)]

    def roll():
        return generate(lm, ids, am, Decoding(gen_length=256, steps=steps, block_length=32, temperature=1.0), generator=gens(), record_trajectory=True)

    rows = []
    with torch.no_grad():
        rows.append(("forward B=6x320, no LoRA", gc.cuda_ms(lambda: lm(full, torch.ones_like(full)), reps=5)))
        rows.append(("sampler step, no LoRA", gc.cuda_ms(roll, reps=1) / steps))
    prepare_for_training(lm, TrainConfig(lora_r=128, lora_alpha=64))
    with torch.no_grad():
        lm.module.eval()
        rows.append(("forward B=6x320, LoRA, eval", gc.cuda_ms(lambda: lm(full, torch.ones_like(full)), reps=5)))
        rows.append(("sampler step, LoRA, eval", gc.cuda_ms(roll, reps=1) / steps))
        lm.module.train()
        rows.append(("forward B=6x320, LoRA, train mode", gc.cuda_ms(lambda: lm(full, torch.ones_like(full)), reps=5)))
        rows.append(("sampler step, LoRA, train mode", gc.cuda_ms(roll, reps=1) / steps))
        torch.backends.cuda.matmul.allow_tf32 = True
        rows.append(("sampler step, LoRA, train mode, TF32", gc.cuda_ms(roll, reps=1) / steps))
        torch.backends.cuda.matmul.allow_tf32 = False
        lm.module.eval()
        for k, v in rows:
            print(f"{k:<40} {v:8.1f} ms", flush=True)
        acts = [torch.profiler.ProfilerActivity.CPU] + ([] if gc.SMOKE else [torch.profiler.ProfilerActivity.CUDA])
        with torch.profiler.profile(activities=acts) as prof:
            roll()
            gc.sync()
    key = "cpu_time_total" if gc.SMOKE else "cuda_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=48))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=48))


if __name__ == "__main__":
    main()
