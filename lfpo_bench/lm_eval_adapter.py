"""An lm-evaluation-harness model, ``lfpo-dllm``, backed by the harness's sampler.

- ``generate_until``: generation with the one sampler; the text is cut at the first of the request's
  ``until`` strings (lm-eval leaves that to the model).
- ``loglikelihood``: the Monte-Carlo masked estimate LLaDA's evaluation uses: for each of ``mc_num`` draws,
  mask k ~ U{1..L} of the L continuation tokens at random and take ``-(L / k) * sum of CE over them``;
  the mean is an ELBO lower bound of log p(continuation | context).
  ``is_greedy`` is whether greedy one-step decoding of the fully masked continuation reproduces it.
- ``loglikelihood_rolling`` is not supported (perplexity of a diffusion LM needs a different estimator).

``lfpo-bench lm-eval --model M --tasks T --include-path DIR`` runs ``lm_eval.simple_evaluate`` with it;
lm-eval's own CLI cannot see models that are not registered in its package.
"""

from __future__ import annotations

import torch

from .sampler import generate

try:  # registration needs lm-eval; the module stays importable without it
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError:  # pragma: no cover - exercised only without the eval extra
    LM = object

    def register_model(*names):
        return lambda cls: cls


@register_model("lfpo-dllm")
class LFPODiffusionLM(LM):
    def __init__(self, model="tiny", task=None, gen_length: int = 256, steps: int = 128, block_length: int = 32,
                 temperature: float | None = None, remasking: str | None = None, threshold: float | None = None,
                 mc_num: int = 128, batch_size: int = 8, device: str = "cpu", seed: int = 0, lm=None, **rule):
        super().__init__()
        from .config import build
        from .decoding import Decoding, DecodingSpec
        from .models.loader import load_model

        self.lm = lm if lm is not None else load_model(str(model), device=device, quiet=True)
        # the model family's own rule (Dream: its schedule, entropy, top-p) unless given; lm-eval passes strings
        given = {k: v for k, v in {"temperature": temperature, "remasking": remasking, **rule}.items() if v not in (None, "")}
        spec = build(DecodingSpec, given, "model_args.")  # typed and checked: lm-eval passes strings
        self.gen = Decoding(int(gen_length), int(steps), int(block_length),
                            threshold=float(threshold) if threshold not in (None, "") else None,
                            **spec.rule(getattr(self.lm, "profile", None)))
        self.mc_num, self.bs, self.seed = int(mc_num), int(batch_size), int(seed)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        kw = dict(kv.split("=", 1) for kv in arg_string.split(",") if kv)
        return cls(**kw, **{k: v for k, v in (additional_config or {}).items() if v is not None and k in ("batch_size", "device")})

    @property
    def tokenizer_name(self) -> str:
        return self.lm.name

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        return chat_history[-1]["content"] if chat_history else ""

    # ---- generation ------------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        g = torch.Generator(device=self.lm.device).manual_seed(self.seed)
        for i in range(0, len(requests), self.bs):
            chunk = requests[i : i + self.bs]
            ctxs = [r.args[0] for r in chunk]
            ids, am = self.lm.encode_prompts(ctxs, self.gen.gen_length)
            # the generated length is the model's gen_length argument; lm-eval's max_gen_toks is not used
            res = generate(self.lm, ids.to(self.lm.device), am.to(self.lm.device), self.gen, generator=g)
            for r, text in zip(chunk, self.lm.decode(res.completion.cpu())):
                until = r.args[1].get("until", []) if len(r.args) > 1 else []
                out.append(cut_at(text, until))
        return out

    # ---- likelihood ------------------------------------------------------------------------------
    @torch.no_grad()
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        g = torch.Generator().manual_seed(self.seed)
        return [self._ll(r.args[0], r.args[1], g) for r in requests]

    def _ll(self, context: str, continuation: str, g: torch.Generator) -> tuple[float, bool]:
        lm = self.lm
        tok = lm.tokenizer
        ctx = tok(context, add_special_tokens=False)["input_ids"]
        cont = tok(continuation, add_special_tokens=False)["input_ids"]
        if not cont:
            return 0.0, True
        dev = lm.device
        y = torch.tensor(cont, device=dev)
        L = len(cont)
        prompt = torch.tensor(ctx, device=dev)
        total, done = 0.0, 0
        while done < self.mc_num:
            n = min(self.bs, self.mc_num - done)
            k = torch.randint(1, L + 1, (n, 1), generator=g)
            masked = (torch.rand(n, L, generator=g).argsort(1) < k).to(dev)  # exactly k random positions
            x = torch.cat([prompt.expand(n, -1), torch.where(masked, torch.full_like(masked, lm.mask_id, dtype=torch.long), y.expand(n, -1))], 1)
            logits = lm(x, torch.ones_like(x))[:, len(ctx):]
            ce = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), y.expand(n, -1), reduction="none")
            total += float((-(ce * masked).sum(1) * L / k.squeeze(1).to(dev)).sum())
            done += n
        x = torch.cat([prompt, torch.full_like(y, lm.mask_id)])[None]
        greedy = bool((lm(x, torch.ones_like(x))[0, len(ctx):].argmax(-1) == y).all())
        return total / self.mc_num, greedy

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("lfpo-dllm does not estimate rolling log-likelihoods (perplexity tasks)")


def cut_at(text: str, until: list[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    cut = len(text)
    for s in until or []:
        if s:
            i = text.find(s)
            if 0 <= i < cut:
                cut = i
    return text[:cut]


def run_lm_eval(model: str, tasks: list[str], include_path: str | None = None, limit: int | None = None, device: str = "cpu",
                model_args: dict | None = None, num_fewshot: int | None = None) -> dict:
    from .types import UserError

    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise UserError("the lm-eval adapter needs lm-eval: pip install 'lfpo-bench[eval]'") from e
    lm = LFPODiffusionLM(model=model, device=device, **(model_args or {}))
    tm = TaskManager(include_path=include_path) if include_path else TaskManager()
    return lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=tm, limit=limit, bootstrap_iters=0, num_fewshot=num_fewshot)
