"""The one RL loop, shared by every method, so comparisons are fair.

Per update u:

1. sample ``prompts_per_update`` training prompts (generator seeded by (seed, u));
2. generate G completions each with the method's rollout policy ("current" or the EMA "old"),
   temperature and remasking, recording commit steps; each prompt's noise comes from its own generator
   seeded by (seed, u, prompt), so a rollout does not depend on batch composition or sharding;
3. score with ``task.score_batch`` (the same function evaluation reports); drop the groups the method
   does not train on (``keep_groups``) and log the share of groups that carry no signal;
4. advantages, ``on_batch``, then per micro-batch ``prepare`` (no grad);
5. mu inner iterations: for each micro-batch and chunk, ``loss`` then backward weighted by the
   micro-batch's share of rows; grad-norm clip, AdamW step, LR schedule, ``after_step``;
6. every ``val_every`` updates, greedy validation on the task's validation split (never the test split);
   the best validation score selects the checkpoint (ties keep the earlier one);
7. every ``checkpoint_every`` updates, an atomic checkpoint from which ``resume`` continues
   bit-identically on CPU (all randomness derives from (seed, update, ...)).

Mask seeds are a function of (seed, update, iteration, global micro-batch index), so the current, old
and reference passes of a method see the same masks, and data-parallel ranks reproduce single-process
training when the micro-batch size equals the per-rank batch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .decoding import Decoding, RolloutConfig
from .distributed import Dist
from .evaluate import evaluate, metric_of
from .fast_rollout import fast_rollout
from .method import zero_signal_groups
from .policies import PolicyBank
from .progress import progress_bar
from .sampler import generate
from .types import RolloutBatch, UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    updates: int = 60  # rollout batches
    prompts_per_update: int = 16  # prompts per rollout batch (per rank under data parallelism)
    group_size: int = 8  # G completions per prompt
    lr: float = 1e-4  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay (reference LLaDA runs: 0.1)
    adam_beta2: float = 0.99  # AdamW beta2 (beta1 = 0.9)
    grad_clip: float = 1.0  # max grad norm (reference LLaDA runs: 0.2)
    lr_schedule: str = "constant"  # "constant" | "cosine"
    warmup: int = 0  # linear warmup in optimiser steps
    micro_batch: int = 64  # rows per forward/backward pass
    rollout: RolloutConfig = field(default_factory=RolloutConfig)  # train.rollout.FIELD: shape, rule, speed switches
    val_every: int = 20  # validate every N updates (0: only at start and end)
    val_limit: int | None = 200  # validation problems (None: all)
    val_steps: int | None = None  # greedy validation steps (None: rollout steps)
    val_metric: str = "accuracy"  # what validation scores, selects on and `tune` compares: "accuracy" (the task score) or one of the task's metrics ("solved")
    select: str = "best_val"  # "best_val" | "last": which checkpoint is `run`'s "after" (both get rows: "after" and "last")
    eval_policy: str = "current"  # policy validated, selected and evaluated: "current" weights | "old" (the EMA/old policy of a method that keeps one)
    checkpoint_every: int = 20  # checkpoint every N updates (0: only at the end)
    lora_r: int | None = None  # LoRA rank (None: family default, 0 for the tiny model = full fine-tune, 128 otherwise)
    lora_alpha: float = 64.0  # LoRA alpha (reference LLaDA runs: r=128, alpha=64)
    lora_dropout: float = 0.05  # LoRA dropout
    gradient_checkpointing: bool = False  # recompute activations in backward (large models)
    load_in_4bit: bool = False  # QLoRA: NF4 base weights via bitsandbytes (CUDA only), as d1 trains
    seed: int = 0  # all training randomness derives from it

    def __post_init__(self):
        if self.select not in ("best_val", "last"):
            raise ValueError(f"train.select must be 'best_val' or 'last', got {self.select!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"train.lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.eval_policy not in ("current", "old"):
            raise ValueError(f"train.eval_policy must be 'current' or 'old', got {self.eval_policy!r}")
        if self.group_size < 2:
            raise ValueError("train.group_size must be >= 2: advantages are relative to the group")
        at_least = {"updates": 0, "prompts_per_update": 1, "micro_batch": 1, "warmup": 0, "val_every": 0,
                    "checkpoint_every": 0, "val_limit": 1, "val_steps": 1, "lora_r": 0}
        for name, lo in at_least.items():
            v = getattr(self, name)
            if v is not None and v < lo:
                raise ValueError(f"train.{name} must be >= {lo}, got {v}")
        for name in ("lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"train.{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.lora_dropout < 1 or not 0 <= self.weight_decay or not 0 < self.adam_beta2 < 1:
            raise ValueError("train.lora_dropout must be in [0, 1), weight_decay >= 0 and adam_beta2 in (0, 1)")


    def validation_decoding(self, task) -> Decoding:
        """Greedy validation at ``val_steps`` (default: the rollout steps) on the rollout shape."""
        L, blk, steps = self.rollout.resolve(task)
        return Decoding(L, self.val_steps or steps, blk)


def _seed(*parts: int) -> int:
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFF)) * 1099511628211) % (2**63)
    return h


class Counter:
    """Counts forward calls of the policy and the rows through them, with and without grad (the cost
    accounting of a training row: counted, not derived from settings). A forward with grad is followed by
    one backward through it, so ``grad_calls`` is also the number of backward passes."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.grad_rows = self.nograd_rows = self.grad_calls = self.nograd_calls = 0

    def hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            if torch.is_grad_enabled():
                self.grad_rows += ids.shape[0]
                self.grad_calls += 1
            else:
                self.nograd_rows += ids.shape[0]
                self.nograd_calls += 1


@dataclass
class Context:
    """What a method's hooks see (``lfpo_bench.method.TrainContext``)."""

    policy: Any
    bank: PolicyBank
    seed: int
    device: torch.device
    update: int = 0
    mb_offset: int = 0  # global index of this rank's first micro-batch
    lockstep: bool = False  # see ``TrainContext.lockstep``

    def use(self, which: str):
        return self.bank.use(which)

    def mask_seed(self, it: int, m: int) -> int:
        return _seed(self.seed, self.update, 7919, it, self.mb_offset + m)

    def ema_update(self, rate: float) -> None:
        self.bank.ema_update(rate)


@dataclass
class Rollout:
    """What stage 2 hands on: the whole scored batch, the rows the method trains on (with advantages; None:
    every group was filtered out) and the update's log entry so far."""

    full: RolloutBatch
    batch: RolloutBatch | None
    entry: dict


@dataclass
class Prepared:
    """Stage 3's micro-batches, their ``prepare`` states and backward weights (0: lock-step padding)."""

    mbs: list[RolloutBatch]
    states: list[dict]
    weights: list[float]
    pad_passes: int = 0


def select_groups(method, batch: RolloutBatch) -> RolloutBatch | None:
    """The groups ``method`` trains on (``keep_groups``), with its advantages; None when it keeps none."""
    G = batch.group_size
    keep = method.keep_groups(batch.rewards, G)
    rows = keep.repeat_interleave(G).nonzero().squeeze(1)
    if rows.numel() == 0:
        return None
    if rows.numel() < batch.n:
        batch = batch.select(rows)
    batch.advantages = method.advantages(batch.rewards, G)
    return batch


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    best_update: int = 0
    best_val: float = float("nan")
    selected: dict[str, torch.Tensor] | None = None  # trainable state of the selected checkpoint
    last: dict[str, torch.Tensor] | None = None  # trainable state (of the evaluated policy) after the last update
    last_update: int = 0
    seconds: float = 0.0

    def budget(self) -> dict[str, int]:
        """What training cost, counted over the logged updates: optimiser steps, forward passes in rollouts,
        forward and backward passes of the optimisation, updates that had nothing to train on."""
        keys = {"opt_steps": "opt_steps", "rollout_fwd": "rollout_forwards", "fwd_passes": "forwards", "bwd_passes": "backwards"}
        ups = [e for e in self.history if e.get("stage") != "start"]
        out = {name: int(sum(e.get(k, 0) for e in ups)) for k, name in keys.items()}
        out["skipped_updates"] = sum(1 for e in ups if e.get("skipped"))
        return out


def rollout(lm, task, examples, method, cfg: TrainConfig, bank: PolicyBank, update: int, prompt_ids_global: list[int],
            lockstep=None):
    """G completions per example, scored. Returns (RolloutBatch without advantages, texts, seconds)."""
    G = cfg.group_size
    dec = cfg.rollout.decoding_for(task, method)
    style = lm.profile.prompt_style
    ids, am = lm.encode_prompts([task.prompt(e, style) for e in examples], dec.gen_length)
    ids, am = ids.repeat_interleave(G, 0).to(lm.device), am.repeat_interleave(G, 0).to(lm.device)
    per_call = max(G, cfg.rollout.batch // G * G)
    outs = []
    t0 = time.perf_counter()
    was_training = lm.module.training
    lm.eval()  # sample from the policy itself: no (LoRA) dropout in rollouts, which also halves their cost
    with torch.no_grad(), bank.use(method.rollout_policy), fast_rollout(lm, cfg.rollout, sharded=lockstep is not None):
        for s in range(0, ids.shape[0], per_call):
            gens = [torch.Generator(device=lm.device).manual_seed(_seed(cfg.seed, update, 104729, p))
                    for p in prompt_ids_global[s // G : (s + per_call) // G]]
            outs.append(generate(lm, ids[s : s + per_call], am[s : s + per_call], dec, generator=gens,
                                 record_trajectory=True, lockstep=lockstep))
    lm.train(was_training)
    completion = torch.cat([o.completion for o in outs])
    commit = torch.cat([o.commit_step for o in outs])
    texts = lm.decode(completion.cpu())
    t_gen = time.perf_counter() - t0
    scored = task.score_batch([e for e in examples for _ in range(G)], texts)
    rewards = torch.tensor([s.score for s in scored], dtype=torch.float32)
    batch = RolloutBatch(
        prompt_ids=ids, prompt_mask=am, completion_ids=completion, completion_mask=lm.completion_mask(completion),
        commit_step=commit, rewards=rewards, advantages=torch.zeros_like(rewards), group_size=G,
        steps=max(o.steps for o in outs), mask_id=lm.mask_id,
    )
    return batch, texts, t_gen, time.perf_counter() - t0 - t_gen


def reference_batch(lm, task, examples, cfg: TrainConfig) -> RolloutBatch:
    """Prompts with the task's reference completions (for methods that train without rollouts)."""
    from .likelihood import sft_batch

    L, _, _ = cfg.rollout.resolve(task)
    pid, pmask, ans = sft_batch(lm, task, examples, L)
    n = len(examples)
    return RolloutBatch(
        prompt_ids=pid.to(lm.device), prompt_mask=pmask.to(lm.device), completion_ids=ans.to(lm.device),
        completion_mask=lm.completion_mask(ans).to(lm.device), commit_step=torch.zeros_like(ans),
        rewards=torch.ones(n), advantages=torch.zeros(n), group_size=1, steps=0, mask_id=lm.mask_id,
    )


def make_batches(batch: RolloutBatch, micro_batch: int) -> list[RolloutBatch]:
    return [batch.select(slice(s, s + micro_batch)) for s in range(0, batch.n, micro_batch)]


def loss_weights(rows: list[int], global_rows: int, world_size: int) -> list[float]:
    """Backward weight of each of this rank's micro-batches: its share of the rows of all ranks, times the
    world size because gradients are averaged over ranks. The averaged gradient is then the gradient of the
    mean loss over every row of every rank, however unevenly the ranks kept groups."""
    return [n * world_size / global_rows for n in rows]


def accumulate(method, ctx: Context, mbs: list[RolloutBatch], states: list[dict], it: int,
               weights: list[float] | None = None, backward=None) -> tuple[float, dict[str, float]]:
    """Loss and backward over all micro-batches and chunks of inner iteration ``it``; micro-batch m's loss is
    scaled by ``weights[m]`` in backward (default: its share of the rows). Zero-weight micro-batches are
    lock-step padding: they run forward and backward but count nowhere. Returns this rank's loss and metrics,
    row-weighted over its real micro-batches."""
    n = sum(mb.n for mb, w in zip(mbs, weights or [1.0] * len(mbs)) if w)
    weights = weights if weights is not None else [mb.n / n for mb in mbs]
    backward = backward or (lambda loss, last: loss.backward())
    tot, metrics = 0.0, {}
    for m, mb in enumerate(mbs):
        k = method.chunks(mb)
        real = bool(weights[m])
        for c in range(k):
            out = method.loss(ctx, mb, states[m], it, m, c)
            if not torch.isfinite(out.loss):
                raise FloatingPointError(f"{method.name} loss is {out.loss.item()} at update {ctx.update}, iteration {it}")
            # the engine's backward: DeepSpeed reduces gradients at the step's last one
            backward(out.loss * weights[m], m == len(mbs) - 1 and c == k - 1)
            if real:
                tot += out.loss.item() * mb.n / n
                for key, v in out.metrics.items():
                    metrics[key] = metrics.get(key, 0.0) + v * mb.n / n / k
    return tot, metrics


class Trainer:
    def __init__(self, lm, task, method, cfg: TrainConfig, run_dir: str | Path, dist: Dist | None = None,
                 show_progress: bool = True, trackers=None, train_examples: list | None = None):
        self.lm, self.task, self.method, self.cfg = lm, task, method, cfg
        self.run_dir = Path(run_dir)
        self.dist = dist or Dist()
        self.show_progress = show_progress and self.dist.is_main
        self.trackers = trackers or []
        if not any(p.requires_grad for p in lm.module.parameters()):
            raise UserError("the model has no trainable parameters")
        method.check_rollout(cfg.rollout.decoding_for(task, method))
        if cfg.eval_policy == "old" and not method.uses_old:
            raise UserError(f"train.eval_policy=old: method {method.name!r} keeps no old/EMA policy; use eval_policy=current")
        if cfg.rollout.use_cache and not getattr(lm, "supports_cache", False):
            raise UserError(f"train.rollout.use_cache: model {lm.name!r} has no prefix KV cache (native LLaDA only); drop it")
        # sharding engines replace the parameters (FSDP: DTensor shards): the optimiser and the bank take them afterwards
        self.opt = self.dist.setup(lm, lambda params: torch.optim.AdamW(
            params, lr=cfg.lr, betas=(0.9, cfg.adam_beta2), weight_decay=cfg.weight_decay), cfg.grad_clip)
        self.module = lm.module
        self.bank = PolicyBank(self.module, keep_old=method.uses_old, keep_ref=method.uses_ref, local=self.dist.local)
        total_steps = max(1, cfg.updates * method.mu)

        def lr_lambda(step: int) -> float:
            w = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
            if cfg.lr_schedule == "cosine":
                return w * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
            return w

        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda)
        self.ctx = Context(policy=lm, bank=self.bank, seed=cfg.seed, device=lm.device, lockstep=self.dist.shards_params)
        self.counter = Counter()
        old = getattr(self.module, "_lfpo_counter_hook", None)
        if old is not None:  # one counting hook per module, however many trainers were built on it
            old.remove()
        self.module._lfpo_counter_hook = self.module.register_forward_pre_hook(self.counter.hook, with_kwargs=True)
        # the prompt pool: the task's training split, or a given list (gradcheck's fixed prompts)
        self.train_examples = list(train_examples) if train_examples is not None else task.load(task.train_split)
        if not self.train_examples:
            raise UserError(f"task {task.name!r} has no training examples in split {task.train_split!r}")
        self.result = TrainResult()
        self.start_update = 0

    # ---- checkpoints -------------------------------------------------------------------------------
    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "trainer_state.pt"

    def save(self, next_update: int) -> None:
        d = self.dist  # gathering sharded state is collective: every rank builds it, rank 0 writes it
        parts = d.save_training_state(self.run_dir, self.module, self.opt, self.bank, next_update)  # model, opt, bank
        if not d.is_main:
            d.barrier()  # wait until rank 0 has published it: a rank that resumes next must find it
            return
        state = {
            "next_update": next_update, **parts, "engine": d.engine, "world_size": d.world_size,
            "sched": self.sched.state_dict(), "history": self.result.history,
            "best_update": self.result.best_update, "best_val": self.result.best_val, "selected": self.result.selected,
            "config": asdict(self.cfg), "method": self.method.name, "method_config": asdict(self.method.cfg),
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt_path.with_suffix(f".tmp{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.ckpt_path)
        d.after_checkpoint(self.run_dir, next_update)
        d.barrier()

    def load(self) -> bool:
        if not self.ckpt_path.exists():
            return False
        state = torch.load(self.ckpt_path, map_location=self.lm.device, weights_only=False)
        if state["config"] != asdict(self.cfg) or state["method_config"] != asdict(self.method.cfg):
            raise UserError(f"{self.ckpt_path} was written with a different config; resume with the same config or pick a new run dir")
        d = self.dist
        saved = (state.get("engine", "single"), state.get("world_size", 1))
        if saved != (d.engine, d.world_size) and (d.engine == "deepspeed" or saved[0] == "deepspeed"):
            raise UserError(f"{self.ckpt_path} was written by {saved[1]} process(es) under {saved[0]}; DeepSpeed checkpoints "
                            "resume only under the same engine and process count")
        d.load_training_state(self.run_dir, self.module, self.opt, self.bank, state)
        self.sched.load_state_dict(state["sched"])
        self.result.history = state["history"]
        self.result.best_update, self.result.best_val = state["best_update"], state["best_val"]
        self.result.selected = state["selected"]
        self.start_update = state["next_update"]
        return True

    # ---- pieces --------------------------------------------------------------------------------------
    def validate(self) -> float:
        cfg, task = self.cfg, self.task
        dec = cfg.validation_decoding(task)
        with self.evaluated():
            rows = evaluate(self.lm, task, [dec], split=task.val_split, seed=cfg.seed, limit=cfg.val_limit,
                            show_progress=False, batch_size=max(64, cfg.rollout.batch), dist=self.dist)
        self.lm.train()
        return metric_of(rows[0], cfg.val_metric, f"task {task.name!r}")

    def evaluated(self):
        """The policy that validation, selection and the run's rows see (``train.eval_policy``)."""
        return self.bank.use(self.cfg.eval_policy)

    def evaluated_state(self) -> dict[str, torch.Tensor]:
        with self.evaluated():
            return self.dist.trainable_state(self.module)

    def _record_val(self, update: int, acc: float, entry: dict) -> None:
        entry["val_acc"] = acc
        best = self.result.best_val if self.result.best_val == self.result.best_val else -math.inf  # nan -> -inf
        if self.result.selected is None or acc > best or self.cfg.select == "last":
            self.result.best_val, self.result.best_update = acc, update
            self.result.selected = self.evaluated_state()

    # ---- stages of one update: sample prompts, roll out, prepare micro-batches, inner iterations, log ------
    def sample_prompts(self, u: int) -> tuple[list, list[int]]:
        """Stage 1: this rank's training examples of update ``u`` and their global prompt keys (which seed
        each prompt's rollout noise)."""
        P = self.cfg.prompts_per_update
        g = torch.Generator().manual_seed(_seed(self.cfg.seed, u, 31))
        global_ids = torch.randint(len(self.train_examples), (P * self.dist.world_size,), generator=g).tolist()
        mine = global_ids[self.dist.rank * P : (self.dist.rank + 1) * P]
        return [self.train_examples[i] for i in mine], list(range(self.dist.rank * P, (self.dist.rank + 1) * P))

    def roll_out(self, u: int, examples: list, prompt_keys: list[int]) -> Rollout:
        """Stage 2: completions (or the reference completions of a method without rollouts), scored, the
        method's group filter and advantages."""
        cfg, method, lm, G = self.cfg, self.method, self.lm, self.cfg.group_size
        self.ctx.update = u
        entry: dict[str, Any] = {"update": u}
        if not method.needs_rollouts:
            full = reference_batch(lm, self.task, examples, cfg)
            entry["groups_used"] = len(examples) * self.dist.world_size
            return Rollout(full, full, entry)
        full, texts, t_gen, t_score = rollout(lm, self.task, examples, method, cfg, self.bank, u, prompt_keys,
                                              lockstep=self.dist.lockstep())
        all_rewards = self.dist.gather(full.rewards)
        entry.update(reward_mean=float(all_rewards.mean()), reward_std=float(all_rewards.std()),
                     zero_signal=float(zero_signal_groups(all_rewards, G).float().mean()),
                     gen_s=round(t_gen, 3), score_s=round(t_score, 3), sample=texts[0][:80])
        batch = select_groups(method, full)
        entry["groups_used"] = self.dist.sum_int(0 if batch is None else batch.n // G)  # over all ranks
        return Rollout(full, batch, entry)

    def prepare_micro_batches(self, ro: Rollout) -> Prepared | None:
        """Stage 3: ``on_batch``, micro-batches, their backward weights against every rank's rows, lock-step
        padding, the dropout seed and each micro-batch's ``prepare`` state. None: no rank trains on anything."""
        method, u = self.method, self.ctx.update
        mbs = []
        if ro.batch is not None and method.trains:
            method.on_batch(ro.batch)
            mbs = make_batches(ro.batch, self.cfg.micro_batch)
        # every rank's (micro-batches, rows): all ranks run as many passes as the busiest one (sharded forwards
        # and gradient reductions are collectives), and weigh their rows against all ranks' rows
        counts = self.dist.gather(torch.tensor([[len(mbs), sum(mb.n for mb in mbs)]])) if method.trains else torch.zeros(1, 2)
        n_mb = int(counts[:, 0].max())
        if not n_mb:
            return None
        weights = loss_weights([mb.n for mb in mbs], int(counts[:, 1].sum()), self.dist.world_size)
        if len(mbs) < n_mb:  # this rank kept fewer groups: zero-weight passes keep it in step with the others
            dummy = ro.full.select(slice(0, ro.full.group_size))
            dummy.advantages = torch.zeros_like(dummy.rewards)
            method.on_batch(dummy)
            weights += [0.0] * (n_mb - len(mbs))
            mbs = mbs + [dummy] * (n_mb - len(mbs))
        # global index of this rank's first micro-batch: the ranks' real micro-batches, in rank order, are the
        # single-process micro-batches (with micro_batch = group size, or equal counts), so masks match
        self.ctx.mb_offset = int(counts[: self.dist.rank, 0].sum())
        # dropout (LoRA's, a model's own) draws from the global RNG, which takes no generator: seed it per
        # (seed, update, rank), so that training with dropout reruns and resumes identically
        torch.manual_seed(_seed(self.cfg.seed, u, 4099, self.dist.rank))
        self.lm.train()
        states = [method.prepare(self.ctx, mb, m) for m, mb in enumerate(mbs)]
        return Prepared(mbs, states, weights, pad_passes=int((n_mb - counts[:, 0]).sum()))

    def backward_pass(self, prep: Prepared, it: int) -> tuple[float, dict[str, float]]:
        """Stage 4a: zeroed gradients, then loss and backward of inner iteration ``it`` over every micro-batch.
        The gradient is left in the parameters (``gradcheck`` reads it here)."""
        self.dist.zero_grad(self.opt)
        return accumulate(self.method, self.ctx, prep.mbs, prep.states, it, prep.weights, backward=self.dist.backward)

    def optimizer_step(self) -> float:
        """Stage 4b: clipped optimiser step, LR schedule, the method's ``after_step``; returns the grad norm."""
        gn = self.dist.step(self.opt, [p for _, p in self.bank.params], self.cfg.grad_clip)
        self.sched.step()
        self.method.after_step(self.ctx)
        return float(gn)

    def skip_update(self) -> None:
        """An update with nothing to train on still takes its place in the LR schedule (``mu`` steps), so that a
        cosine schedule reaches its end after ``updates`` updates whatever the share of no-signal batches."""
        with warnings.catch_warnings():  # the scheduler warns when it steps before the optimiser ever has
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
            for _ in range(self.method.mu):
                self.sched.step()

    def step(self, u: int) -> dict:
        """One update: the stages above, in order; returns its log entry."""
        method = self.method
        t0 = time.perf_counter()
        self.counter.reset()
        ro = self.roll_out(u, *self.sample_prompts(u))
        entry = ro.entry
        rollout_passes = self.counter.nograd_calls
        t_upd = time.perf_counter()
        self.counter.reset()  # from here on, the optimisation passes only
        prep = self.prepare_micro_batches(ro)
        metrics: dict[str, float] = {}
        losses = []
        if prep is None:
            self.skip_update()
            entry["skipped"] = True  # no group carried signal on any rank: no forward, backward or optimiser step
        else:
            entry["pad_passes"] = prep.pad_passes  # zero-weight micro-batches run for lock-step, all ranks
            for it in range(method.mu):
                tot, it_metrics = self.backward_pass(prep, it)
                for k, v in it_metrics.items():
                    metrics[k] = metrics.get(k, 0.0) + v / method.mu
                gn = self.optimizer_step()
                losses.append(tot)
                metrics["grad_norm"] = metrics.get("grad_norm", 0.0) + gn / method.mu
        dt = time.perf_counter() - t0
        n_samples = self.cfg.prompts_per_update * (self.cfg.group_size if method.needs_rollouts else 1)
        entry.update(loss=float(sum(losses) / len(losses)) if losses else None, update_s=round(time.perf_counter() - t_upd, 3),
                     seconds=round(dt, 3), samples_per_s=round(n_samples / dt, 2), lr=self.sched.get_last_lr()[0],
                     opt_steps=len(losses), rollout_fwd=rollout_passes, fwd_passes=self.counter.grad_calls + self.counter.nograd_calls,
                     bwd_passes=self.counter.grad_calls, fwd_rows=self.counter.grad_rows + self.counter.nograd_rows,
                     bwd_rows=self.counter.grad_rows, **{f"m/{k}": round(v, 6) for k, v in metrics.items()})
        return entry

    # ---- loop ----------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        cfg = self.cfg
        t_start = time.perf_counter()
        if resume and self.load():
            log.info("resumed %s at update %d", self.ckpt_path, self.start_update)
        self._restart_log()
        if self.start_update == 0 and not self.result.history:
            entry = {"update": 0, "stage": "start"}
            self._record_val(0, self.validate(), entry)
            self._log(entry)
        with progress_bar(f"train {self.method.name} on {self.task.name}", total=cfg.updates, enabled=self.show_progress) as bar:
            bar.advance(self.start_update)
            for u in range(self.start_update, cfg.updates):
                entry = self.step(u)
                done = u + 1
                if (cfg.val_every and done % cfg.val_every == 0) or done == cfg.updates:
                    self._record_val(done, self.validate(), entry)
                self._log(entry)
                if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.updates:
                    self.save(done)
                loss = "skipped" if entry.get("skipped") else f"{entry['loss']:.4f}"
                status = {"reward": f"{entry.get('reward_mean', float('nan')):.3f}", "loss": loss,
                          "no-signal": f"{entry.get('zero_signal', 0):.2f}", "samples/s": entry["samples_per_s"]}
                if "m/kl" in entry:
                    status["kl"] = f"{entry['m/kl']:.4f}"
                if "val_acc" in entry:
                    status["val"] = f"{entry['val_acc']:.3f}"
                bar.advance(1, **status)
        if cfg.updates == 0 and self.result.selected is None:
            self.result.selected = self.evaluated_state()
        self.result.last, self.result.last_update = self.evaluated_state(), cfg.updates
        self.result.seconds = time.perf_counter() - t_start
        return self.result

    def _restart_log(self) -> None:
        """``log.jsonl`` is the history the run continues from: lines an earlier attempt wrote past its last
        checkpoint (or, with no checkpoint, all of them) would otherwise stand twice in the training curve."""
        path = self.run_dir / "log.jsonl"
        if self.dist.is_main and (path.exists() or self.result.history):
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(json.dumps(e, default=float) + "\n" for e in self.result.history))
            os.replace(tmp, path)

    def _log(self, entry: dict) -> None:
        self.result.history.append(entry)
        if not self.dist.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(entry, default=float) + "\n")
        for t in self.trackers:
            t.log({k: v for k, v in entry.items() if isinstance(v, (int, float))}, step=entry["update"])
