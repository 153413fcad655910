"""Gradient fidelity: how close is each method's update to the exact policy gradient?

Under **random remasking** the positions unmasked at each step do not depend on the parameters, so the
log-probability of a sampled trajectory is exact and differentiable: the sum over steps of the
log-probabilities (temperature 1) of the tokens committed at that step given that step's state
(``likelihood.trajectory_logps`` with ``shrink=1``). The objective J(theta) = mean over a fixed prompt set of
E[R(y)] then has the exact gradient E[(R - b) grad log p(traj)], estimated here with leave-one-out
baselines over many trajectories per prompt (g*). Two independent halves give its precision (split-half
cosine).

Each method's gradient is the gradient of its own loss on a standard batch: the trainer's ``step`` (same
rollouts, advantages, group filtering, masks and micro-batching as in training) with rollouts forced to
random remasking at temperature 1 for every method, stopped at the first inner iteration's optimiser step
(old = current parameters; gradient clipping off). Over many independent batches we report, per method:

- ``cos_mean``: cosine between the mean of its batch gradients and g* (direction bias);
- ``cos_batch``: mean cosine of single batch gradients with g*;
- ``rel_var``: E|g - mean g|^2 / |mean g|^2 (noise of one batch, relative);
- ``batches_to``: fewest batches whose mean reaches ``target_cos`` with g* (powers of two; ">N" if never).

``reinforce`` is the exact trajectory REINFORCE (leave-one-out) at the same batch size: the unbiased row.
Losses are minimised, so a method's gradient is compared with -grad J (both point downhill).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass, field

import torch

from .likelihood import trajectory_logps
from .sampler import generate
from .types import UserError

METHODS_DEFAULT = ("lfpo", "diffu_grpo", "wd1", "spg", "coupled_grpo", "espo", "trace_rl", "d2", "map")


@dataclass
class GradcheckConfig:
    task: str = "sudoku4"
    model: str = "tiny"  # tiny (the embedded start) | a checkpoint folder (e.g. a run's checkpoint/)
    methods: tuple[str, ...] = METHODS_DEFAULT
    prompts: int = 8  # the fixed prompt set (first N of the shuffled train split)
    group_size: int = 8  # G completions per prompt in a method's batch
    batches: int = 64  # independent batches per method
    ref_samples: int = 1024  # trajectories per prompt for g* (two halves of half each)
    steps: int | None = None  # rollout steps (default: the task's RL preset, else its default)
    chunk: int = 256  # rows per generate / backward chunk
    target_cos: float = 0.9
    seed: int = 0


@dataclass
class MethodStats:
    name: str
    n: int = 0
    total: torch.Tensor | None = None
    sq_norm: float = 0.0
    cos_sum: float = 0.0
    prefix: dict[int, float] = field(default_factory=dict)

    def add(self, g: torch.Tensor, ref: torch.Tensor) -> None:
        self.total = g.clone() if self.total is None else self.total + g
        self.n += 1
        self.sq_norm += float(g.pow(2).sum())
        self.cos_sum += cosine(g, ref)
        if self.n & (self.n - 1) == 0:  # a power of two
            self.prefix[self.n] = cosine(self.total, ref)

    def row(self, ref: torch.Tensor, target: float) -> dict:
        mean = self.total / self.n
        mn2 = float(mean.pow(2).sum())
        reach = batches_to({f"cos@{n}": c for n, c in self.prefix.items()}, target)
        return {"method": self.name, "batches": self.n, "cos_mean": cosine(mean, ref), "cos_batch": self.cos_sum / self.n,
                "rel_var": (self.sq_norm / self.n - mn2) / mn2 if mn2 > 0 else math.inf,
                "batches_to": reach,
                **{f"cos@{n}": round(c, 4) for n, c in sorted(self.prefix.items())}}


def batches_to(row: dict, target: float):
    """Fewest batches n (a power of two) from which the mean gradient's cosine with g* stays >= ``target``
    at every larger n measured; ">N" when it never does."""
    pts = sorted((int(k.split("@")[1]), v) for k, v in row.items() if k.startswith("cos@"))
    reach = None
    for n, c in reversed(pts):
        if c < target:
            break
        reach = n
    return reach if reach is not None else f">{pts[-1][0] if pts else 0}"


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    d = float(a.norm() * b.norm())
    return float(a @ b) / d if d > 0 else 0.0


def flat_grad(params) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten().float() for p in params])


def rollout_steps(task, steps: int | None) -> int:
    from .decoding import RolloutConfig

    return RolloutConfig(steps=steps).resolve(task)[2]


def sample_trajectories(lm, task, examples, k: int, steps: int, gen: torch.Generator, chunk: int):
    """``k`` random-remasking, temperature-1 trajectories per example: (prompt ids, mask, completion, commit
    step, reward, prompt index), in chunks of at most ``chunk`` rows."""
    from .decoding import Decoding, RolloutConfig

    L, blk, steps = RolloutConfig(steps=steps).resolve(task)
    dec = Decoding(L, steps, blk, temperature=1.0, remasking="random")
    ids, am = lm.encode_prompts([task.prompt(e, lm.profile.prompt_style) for e in examples], L)
    rows = [(p, j) for p in range(len(examples)) for j in range(k)]
    out = []
    lm.eval()
    with torch.no_grad():
        for s in range(0, len(rows), chunk):
            idx = torch.tensor([p for p, _ in rows[s : s + chunk]])
            seed = int(torch.randint(2**62, (1,), generator=gen))
            g = torch.Generator(device=lm.device).manual_seed(seed)
            o = generate(lm, ids[idx].to(lm.device), am[idx].to(lm.device), dec, generator=g, record_trajectory=True)
            texts = lm.decode(o.completion.cpu())
            rewards = torch.tensor([s_.score for s_ in task.score_batch([examples[int(p)] for p in idx], texts)])
            out.append((ids[idx], am[idx], o.completion, o.commit_step, rewards, idx, o.commit_logp))
    return out


def reinforce_gradient(lm, task, examples, k: int, steps: int, gen: torch.Generator, chunk: int) -> torch.Tensor:
    """-grad J by trajectory REINFORCE with a leave-one-out baseline over ``k`` trajectories per prompt
    (k >= 2), averaged over prompts: the gradient of the loss -mean_i A_i log p(traj_i)."""
    if k < 2:
        raise UserError("the leave-one-out baseline needs at least 2 trajectories per prompt")
    parts = sample_trajectories(lm, task, examples, k, steps, gen, chunk)
    P = len(examples)
    rewards = torch.cat([p[4] for p in parts]).view(P, k).float()
    adv = (rewards - (rewards.sum(1, keepdim=True) - rewards) / (k - 1)).flatten()
    params = [p for p in lm.module.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    lm.eval()
    s = 0
    for pid, pm, comp, commit, _, _, _ in parts:
        n = comp.shape[0]
        lp = trajectory_logps(lm, pid.to(lm.device), pm.to(lm.device), comp, commit, mask_id=lm.mask_id, shrink=1)
        loss = -(adv[s : s + n].to(lp.device) * lp.sum(1)).sum() / (P * k)
        loss.backward()
        s += n
    g = flat_grad(params)
    for p in params:
        p.grad = None
    return g


G_STAR_CODE = (sample_trajectories, reinforce_gradient, trajectory_logps, generate)  # what a cached g* is keyed on


def method_gradients(lm, task, examples, name: str, cfg: GradcheckConfig, ref: torch.Tensor, show=None) -> MethodStats:
    """``cfg.batches`` gradients of ``name``'s loss, each on a fresh batch of the trainer's own making."""
    from .decoding import RolloutConfig
    from .registry import METHODS
    from .trainer import TrainConfig, Trainer

    cls = METHODS.get(name)
    mcfg = cls.Config()
    # random remasking at temperature 1 (the exact g*'s rollouts); mu = 1: only the first inner iteration is
    # measured, whose gradient does not depend on mu (its old policy is the current one, its masks are seeded
    # per iteration), so later iterations' old/reference passes would be wasted work
    over = {k: v for k, v in (("temperature", 1.0), ("remasking", "random"), ("mu", 1)) if k in {f.name for f in dataclasses.fields(mcfg)}}
    method = cls(dataclasses.replace(mcfg, **over))
    steps = rollout_steps(task, cfg.steps)
    tc = TrainConfig(updates=cfg.batches, prompts_per_update=len(examples), group_size=cfg.group_size,
                     micro_batch=len(examples) * cfg.group_size, grad_clip=1e30, val_every=0, checkpoint_every=0, seed=cfg.seed,
                     rollout=RolloutConfig(steps=steps, decoding="method", batch=max(cfg.chunk, cfg.group_size)))
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(lm, task, method, tc, tmp, show_progress=False, train_examples=examples)
        params = [p for _, p in tr.bank.params]
        stats = MethodStats(name)
        for u in range(cfg.batches):
            # the trainer's own stages up to the first inner iteration's backward, whose gradient is the row's
            prep = tr.prepare_micro_batches(tr.roll_out(u, *tr.sample_prompts(u)))
            if prep is None:  # every group of the batch was filtered out (no signal): a zero update
                stats.add(torch.zeros_like(ref), ref)
            else:
                tr.backward_pass(prep, 0)
                stats.add(flat_grad(params), ref)
            if show:
                show()
        for p in params:
            p.grad = None
    return stats


def reference_key(cfg: GradcheckConfig, lm, task, examples, steps: int) -> dict:
    """Everything g* depends on: the task and its prompts, the weights (a digest), the sample count, steps,
    seed and chunking (chunks draw their seeds in order), and the source of the functions that sample and replay."""
    import hashlib
    import inspect

    h = hashlib.sha256()
    for name, t in sorted(lm.module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    code = hashlib.sha256()  # the functions g* is computed by (not whole modules: a new method must not void it)
    for fn in G_STAR_CODE:
        code.update(inspect.getsource(fn).encode())
    prompts = hashlib.sha256("\x00".join(task.prompt(e, lm.profile.prompt_style) for e in examples).encode()).hexdigest()
    return {"task": cfg.task, "prompts": prompts, "weights": h.hexdigest(), "ref_samples": cfg.ref_samples, "steps": steps,
            "seed": cfg.seed, "chunk": cfg.chunk, "code": code.hexdigest()[:16]}


def load_reference(path, key: dict) -> dict | None:
    """The cached g* halves at ``path`` when they were computed for exactly ``key``; None when there is no file.
    A file for another setting is an error (it would silently be replaced otherwise)."""
    from pathlib import Path as _P

    p = _P(path)
    if not p.exists():
        return None
    try:
        d = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise UserError(f"--ref-cache {p}: not a reference-gradient cache ({type(e).__name__}); remove it or pick another path") from None
    if not isinstance(d, dict) or d.get("key") != key:
        diff = sorted(k for k in key if not isinstance(d, dict) or (d.get("key") or {}).get(k) != key[k])
        raise UserError(f"--ref-cache {p} holds the reference gradient of another setting (differs in: {', '.join(diff)}); "
                        "remove it to recompute, or pick another path")
    return d


def save_reference(path, key: dict, halves: list, gen_state) -> None:
    import io

    from .outputs import write_atomic

    buf = io.BytesIO()
    torch.save({"key": key, "halves": halves, "gen_state": gen_state}, buf)
    write_atomic(path, buf.getvalue(), "--ref-cache")


def merge_results(old: dict, new: dict) -> dict:
    """``new``'s rows added to ``old``'s (a re-measured method replaces its row); both must come from the same
    setting (every config value but the methods, and the same reference gradient)."""
    a = {k: v for k, v in old["config"].items() if k != "methods"}
    b = {k: v for k, v in new["config"].items() if k != "methods"}
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diff or old.get("split_half_cos") != new.get("split_half_cos") or old.get("model") != new.get("model"):
        raise UserError("--add: the existing result is of another setting (differs in: "
                        f"{', '.join(diff) or 'the reference gradient'}); write to a new --out instead")
    names = [r["method"] for r in new["rows"]]
    rows = [r for r in old["rows"] if r["method"] not in names] + new["rows"]
    methods = list(dict.fromkeys(list(old["config"]["methods"]) + list(new["config"]["methods"])))
    return {**old, "config": {**old["config"], "methods": methods}, "rows": rows}


def run_gradcheck(cfg: GradcheckConfig, show_progress: bool = True, ref_cache=None) -> dict:
    """Every method's gradient statistics against g*. ``ref_cache``: a file that keeps g* (its two halves and the
    generator state after them) so that methods added later are measured against the same g*, in minutes."""
    from .config import make_task
    from .models.loader import load_model
    from .progress import progress_bar

    task = make_task(cfg.task)
    lm = load_model(cfg.model, task=task, quiet=not show_progress)
    for p in lm.module.parameters():
        p.requires_grad_(True)
    pool = task.load(task.train_split)
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    examples = [pool[i] for i in order[: cfg.prompts]]
    steps = rollout_steps(task, cfg.steps)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    key = reference_key(cfg, lm, task, examples, steps)
    cached = load_reference(ref_cache, key) if ref_cache else None
    total = (0 if cached else 2) + len(cfg.methods) * cfg.batches + cfg.batches
    with progress_bar(f"gradcheck {cfg.task}", total=total, enabled=show_progress) as bar:
        if cached:
            halves = cached["halves"]
            gen.set_state(cached["gen_state"])
        else:
            halves = []
            for _ in range(2):
                halves.append(reinforce_gradient(lm, task, examples, cfg.ref_samples // 2, steps, gen, cfg.chunk))
                bar.advance(1)
            if ref_cache:
                save_reference(ref_cache, key, halves, gen.get_state())
        ref = (halves[0] + halves[1]) / 2
        rows = []
        for name in cfg.methods:
            rows.append(method_gradients(lm, task, examples, name, cfg, ref, show=lambda: bar.advance(1)).row(ref, cfg.target_cos))
        st = MethodStats("reinforce (exact, same batch)")
        for _ in range(cfg.batches):
            st.add(reinforce_gradient(lm, task, examples, cfg.group_size, steps, gen, cfg.chunk), ref)
            bar.advance(1)
        rows.append(st.row(ref, cfg.target_cos))
    return {"config": dataclasses.asdict(cfg), "split_half_cos": cosine(halves[0], halves[1]), "rollout_steps": steps,
            "model": lm.name, "rows": rows}


def figure(results: dict[str, dict], path) -> None:
    """Cosine with g* of the mean of the first n batch gradients, against n, one panel per result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False, sharey=True)
    for ax, (title, res) in zip(axes[0], results.items()):
        for r in res["rows"]:
            pts = sorted((int(k.split("@")[1]), v) for k, v in r.items() if k.startswith("cos@"))
            style = "k--" if r["method"].startswith("reinforce") else "-"
            ax.plot([n for n, _ in pts], [c for _, c in pts], style, marker="o", ms=3, label=r["method"].split(" (")[0])
        ax.axhline(res["split_half_cos"], color="grey", lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_title(f"{title}\n(g* split-half {res['split_half_cos']:.3f}, dotted)", fontsize=9)
        ax.set_xlabel("batches averaged")
    axes[0][0].set_ylabel("cosine with g*")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def unbiased_ratio(row: dict) -> float:
    """Measured cos(mean g, g*) over what an unbiased estimator with the row's per-batch variance would reach
    with its number of batches: for g = g* + noise, E|mean g - g*|^2 / |g*|^2 = rel_var / n, so the expected
    cosine is about 1 / sqrt(1 + rel_var / n). 1 = no visible bias; < 1 = the mean points elsewhere."""
    return row["cos_mean"] * math.sqrt(1 + row["rel_var"] / row["batches"])


def table(results: dict[str, dict], target: float = 0.9) -> str:
    """Markdown: one row per (result, method); in each result exact REINFORCE first, then the methods by cosine."""
    lines = ["| setting (g* split-half) | method | cos(mean g, g*) | mean cos(g, g*) | rel. variance | ratio to unbiased "
             f"| batches to {target} |", "|---|---|---|---|---|---|---|"]
    for title, res in results.items():
        rows = sorted(res["rows"], key=lambda r: (not r["method"].startswith("reinforce"), -r["cos_mean"]))
        for i, r in enumerate(rows):
            setting = f"{title} ({res['split_half_cos']:.3f})" if i == 0 else ""
            lines.append(f"| {setting} | {r['method']} | {r['cos_mean']:.3f} | {r['cos_batch']:.3f} | {r['rel_var']:#.3g} | "
                         f"{unbiased_ratio(r):.2f} | {batches_to(r, target)} |")
    return "\n".join(lines)


def report(folder) -> None:
    """``python -m lfpo_bench.gradcheck results/gradient-fidelity``: table.md and fidelity.png from the JSONs."""
    import json
    from pathlib import Path

    folder = Path(folder)
    # NAME-start before NAME-mid (regenerate.sh's names), otherwise by name
    paths = sorted(folder.glob("*.json"), key=lambda p: (p.stem.rsplit("-", 1)[0], not p.stem.endswith("-start"), p.stem))
    res = {p.stem: json.loads(p.read_text()) for p in paths}
    if not res:
        raise UserError(f"no gradcheck results (*.json) in {folder}")
    (folder / "table.md").write_text(table(res) + "\n")
    figure(res, folder / "fidelity.png")


if __name__ == "__main__":
    import sys

    report(sys.argv[1] if len(sys.argv) > 1 else "results/gradient-fidelity")
