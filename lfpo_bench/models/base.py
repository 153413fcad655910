"""The ``DiffusionLM`` interface every model family is wrapped in.

One object gives the sampler, the likelihood estimators and the trainer what they need:
logits for token ids plus an attention mask (already shifted for families whose logits are shifted),
the mask token id, a tokenizer, and a ``FamilyProfile`` (EOS ids, chat template, recommended decoding).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FamilyProfile:
    name: str  # "tiny", "llada", "dream", "diffucoder"
    mask_id: int
    eos_ids: tuple[int, ...]  # any of these ends a completion (EOS, EoT)
    pad_id: int  # left padding id (LLaDA: pad := eos)
    shift_logits: bool = False  # Dream/DiffuCoder: position i's logits predict token i+1
    chat: bool = False  # wrap prompts in the tokenizer's chat template
    prompt_style: str = "chat"  # "compact" for the tiny model (no instructions), "chat" otherwise
    sep_id: int | None = None  # appended after the prompt (tiny model)
    max_length: int | None = None  # hard limit on prompt + completion tokens
    recommended: dict[str, Any] = field(default_factory=dict)  # decoding defaults


class DiffusionLM:
    """A masked-diffusion LM: a torch module plus tokenizer and family profile.

    ``model(ids, attention_mask)`` returns float logits ``[B, T, V]`` where ``logits[:, i]`` is the
    prediction for position i, whatever the family's native convention.
    """

    supports_cache = False  # prefix KV cache (``forward_with_cache`` / ``forward_suffix``); see models/hf.py
    supports_logits_range = False  # the module takes ``logits_range=(a, b)`` (native LLaDA and Dream)

    def __init__(self, module: nn.Module, tokenizer, profile: FamilyProfile, name: str):
        self.module = module
        self.tokenizer = tokenizer
        self.profile = profile
        self.name = name
        # what forwards go through when an engine wraps the module (DeepSpeed ZeRO-3 gathers parameters in its
        # engine's forward); None: the module itself
        self.forward_module: nn.Module | None = None

    # ---- core -------------------------------------------------------------------------------------
    @property
    def mask_id(self) -> int:
        return self.profile.mask_id

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 logits_range: tuple[int, int] | None = None) -> torch.Tensor:
        """Logits ``[B, T, V]``, or of positions a..b-1 only with ``logits_range=(a, b)`` (the LM head then runs
        on those positions alone when the module supports it: the sampler needs one block)."""
        fwd = self.forward_module or self.module
        if logits_range is not None and not self.supports_logits_range:
            return self(input_ids, attention_mask)[:, logits_range[0] : logits_range[1]]
        a, b = logits_range or (0, input_ids.shape[1])
        lo = max(a - 1, 0) if self.profile.shift_logits else a
        kw = {"logits_range": (lo, b)} if logits_range is not None else {}
        out = fwd(input_ids=input_ids, attention_mask=attention_mask, **kw)
        logits = out.logits if hasattr(out, "logits") else out[0]
        if self.profile.shift_logits:
            # native: logits[:, i] predicts token i+1; realign so logits[:, i] predicts token i (position 0 keeps its own)
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1) if lo == 0 else logits[:, :-1]
            if lo == 0 and a > 0:
                logits = logits[:, a:]
        return logits

    def parameters(self):
        return self.module.parameters()

    def train(self, mode: bool = True):
        self.module.train(mode)
        return self

    def eval(self):
        return self.train(False)

    # ---- text <-> ids -----------------------------------------------------------------------------
    def format_prompt(self, text: str) -> list[int]:
        tok = self.tokenizer
        if self.profile.chat and hasattr(tok, "apply_chat_template"):
            s = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
            ids = tok(s, add_special_tokens=False)["input_ids"]
        else:
            ids = tok(text, add_special_tokens=False)["input_ids"]
        if self.profile.sep_id is not None:
            ids = list(ids) + [self.profile.sep_id]
        return list(ids)

    def encode_prompts(self, texts: list[str], gen_length: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids and attention mask. Prompts longer than the model allows are cut from the
        left (keeping the end, next to the answer) with a warning."""
        seqs = [self.format_prompt(t) for t in texts]
        limit = self.profile.max_length
        if limit is not None:
            room = limit - gen_length
            if room <= 0:
                raise ValueError(f"gen_length={gen_length} leaves no room for the prompt (model max_length={limit})")
            cut = [len(s) for s in seqs if len(s) > room]
            if cut:
                log.warning("%d prompt(s) longer than %d tokens were cut from the left to fit the model", len(cut), room)
                seqs = [s[-room:] for s in seqs]
        P = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), P), self.profile.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), P), dtype=torch.long)
        for i, s in enumerate(seqs):
            if s:
                ids[i, P - len(s):] = torch.tensor(s, dtype=torch.long)
                mask[i, P - len(s):] = 1
        return ids, mask

    def completion_mask(self, completion: torch.Tensor) -> torch.Tensor:
        """1 up to and including the first EOS/EoT, 0 after it. ``[B, L]`` long."""
        is_eos = torch.zeros_like(completion, dtype=torch.bool)
        for e in self.profile.eos_ids:
            is_eos |= completion == e
        after = (is_eos.long().cumsum(-1) - is_eos.long()) > 0  # strictly after the first EOS
        return (~after).long()

    def decode(self, completion: torch.Tensor) -> list[str]:
        """Completion ids to text, cut at the first EOS/EoT; other special tokens (mask, pad) are dropped."""
        out = []
        eos = set(self.profile.eos_ids)
        for row in completion.tolist():
            cut = next((i for i, t in enumerate(row) if t in eos), len(row))
            out.append(self.tokenizer.decode(row[:cut], skip_special_tokens=True))
        return out
