"""Sampler benchmark: the harness sampler against a straightforward LLaDA reference, measured in one run.

For each model (the tiny model, and a larger random-weight model of the same class) and batch size it
prints:

- ms per generated sample for the harness sampler and for ``reference_generate`` below (a direct
  re-implementation of LLaDA's published algorithm: float64 Gumbel noise and a full softmax over the whole
  vocabulary and sequence at every step, a per-row top-k loop), and their ratio (target >= 1.0x);
- the harness sampler's overhead over the floor ``NFE x one forward pass`` (target < 10% at batch >= 8);
- NFE, time and accuracy of threshold decoding against fixed steps, on the pretrained tiny Sudoku model
  (a random-weight model is never confident, so threshold decoding is only meaningful on a trained one).

Usage: python bench/sampler.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from lfpo_bench.decoding import Decoding
from lfpo_bench.models.loader import new_tiny
from lfpo_bench.sampler import generate


def reference_generate(model, prompt, gen_length, steps, block_length, temperature=0.0, remasking="low_confidence"):
    """LLaDA's reference algorithm, written plainly (the baseline this benchmark measures against)."""
    mask_id = model.mask_id
    x = torch.full((prompt.shape[0], prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, : prompt.shape[1]] = prompt
    num_blocks = gen_length // block_length
    spb = steps // num_blocks
    for nb in range(num_blocks):
        s = prompt.shape[1] + nb * block_length
        e = s + block_length
        block_mask = x[:, s:e] == mask_id
        n = block_mask.sum(1, keepdim=True)
        base, rem = n // spb, n % spb
        ntt = base.expand(-1, spb).clone()
        for j in range(ntt.shape[0]):
            ntt[j, : rem[j]] += 1
        for i in range(spb):
            mask_index = x == mask_id
            logits = model(x)
            if temperature > 0:
                lg = logits.to(torch.float64)
                noise = torch.rand_like(lg)
                logits_with_noise = lg.exp() / (-torch.log(noise)) ** temperature
            else:
                logits_with_noise = logits
            x0 = logits_with_noise.argmax(-1)
            if remasking == "low_confidence":
                p = F.softmax(logits.to(torch.float64), dim=-1)
                x0_p = torch.gather(p, -1, x0[..., None]).squeeze(-1)
            else:
                x0_p = torch.rand(x0.shape, dtype=torch.float64)
            x0_p[:, e:] = -np.inf
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, torch.tensor(-np.inf, dtype=torch.float64))
            transfer = torch.zeros_like(x0, dtype=torch.bool)
            for j in range(confidence.shape[0]):
                _, idx = torch.topk(confidence[j], k=int(ntt[j, i]))
                transfer[j, idx] = True
            x[transfer] = x0[transfer]
    return x


def timeit(fn, reps: int, warmup: bool = True) -> float:
    if warmup:
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def bench_model(name, lm, prompt_len, L, block, steps, batches, reps, temperature, warmup=True):
    rows = []
    V = lm.module.config.vocab_size
    for B in batches:
        g = torch.Generator().manual_seed(0)
        prompt = torch.randint(5, V, (B, prompt_len), generator=g)
        am = torch.ones_like(prompt)
        x_full = torch.cat([prompt, torch.full((B, L), lm.mask_id)], 1)
        kw = dict(gen_length=L, steps=steps, block_length=block, temperature=temperature)
        fwd = lambda: [lm(x_full, torch.ones_like(x_full)) for _ in range(steps)]  # noqa: E731, B023 (called at once) - the floor: NFE forwards
        ours = lambda: generate(lm, prompt, am, Decoding(**kw), generator=torch.Generator().manual_seed(1))  # noqa: E731, B023 (called at once)
        ref = lambda: reference_generate(lm, prompt, L, steps, block, temperature)  # noqa: E731, B023 (called at once)
        with torch.no_grad():
            # interleaved: each repetition times floor, ours and reference back to back, so drifts in machine
            # load hit all three alike; medians over repetitions
            samples = [[], [], []]
            for r in range(reps):
                for i, fn in enumerate((fwd, ours, ref)):
                    samples[i].append(timeit(fn, 1, warmup and r == 0))
            floor, t_ours, t_ref = (statistics.median(x) for x in samples)
        rows.append(
            dict(model=name, B=B, L=L, steps=steps, temp=temperature,
                 ours_ms=1000 * t_ours / B, ref_ms=1000 * t_ref / B, speedup=t_ref / t_ours,
                 floor_ms=1000 * floor / B, overhead=(t_ours - floor) / floor)
        )
    return rows


def bench_threshold(reps: int):
    """Fixed steps vs threshold decoding on the pretrained tiny Sudoku model and its test puzzles."""
    from lfpo_bench.evaluate import Decoding, complete
    from lfpo_bench.models.loader import load_model
    from lfpo_bench.registry import TASKS

    task = TASKS.get("sudoku4")()
    lm = load_model("tiny", task=task)
    exs = task.load("test")
    out = []
    for dec in [Decoding(16, 16, 16), Decoding(16, 8, 16), Decoding(16, 16, 16, threshold=0.9),
                Decoding(16, 16, 16, threshold=0.7), Decoding(16, 16, 16, threshold=0.5)]:
        ts = []
        for _ in range(reps):
            c = complete(lm, task, exs, dec, batch_size=64, generator=None)
            ts.append(c.seconds)
        acc = float(np.mean([s.metrics["solved"] for s in task.score_batch(exs, c.texts)]))
        out.append(dict(dec=f"{dec.label} steps<={dec.steps}", nfe=float(np.mean(c.nfe)),
                        ms=1000 * statistics.median(ts) / len(exs), solved=acc))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and batch sizes")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = 2 if args.quick else 5
    tiny = new_tiny(0)  # the embedded default's architecture: d=128, 4 layers
    tiny.module.eval()
    big = new_tiny(0, d_model=512, n_layers=8, n_heads=8)
    big.module.eval()
    rows = []
    for temp in (0.0, 1.0):
        rows += bench_model("tiny d128x4", tiny, 17, 16, 16, 16, [1, 8, 64] if not args.quick else [8, 64], 3 * reps + 1, temp)
        rows += bench_model("d512x8", big, 64, 256, 32, 32, [1, 8] if not args.quick else [8], 1, temp, warmup=False)
    hdr = (f"{'model':12} {'B':>3} {'L':>4} {'steps':>5} {'temp':>4} | {'ours ms':>9} {'ref ms':>9} {'speedup':>7} | "
           f"{'floor ms':>8} {'overhead':>8}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms per generated sample (median of runs)")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(
            f"{r['model']:12} {r['B']:>3} {r['L']:>4} {r['steps']:>5} {r['temp']:>4.1f} | {r['ours_ms']:>9.3f} {r['ref_ms']:>9.3f} "
            f"{r['speedup']:>6.2f}x | {r['floor_ms']:>8.3f} {100 * r['overhead']:>7.1f}%"
        )
    print("targets: speedup >= 1.00x at equal settings; overhead < 10% at B >= 8 (floor = NFE x one forward pass)")
    print()
    print("threshold vs fixed steps, pretrained tiny sudoku4, 400 test puzzles, batch 64")
    print(f"{'decoding':28} {'mean NFE':>8} {'ms/sample':>9} {'solved':>7}")
    for r in bench_threshold(reps):
        print(f"{r['dec']:28} {r['nfe']:>8.2f} {r['ms']:>9.3f} {100 * r['solved']:>6.1f}%")


if __name__ == "__main__":
    main()
