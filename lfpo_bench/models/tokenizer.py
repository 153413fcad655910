"""Character-level tokenizer of the built-in tiny model.

Covers every synthetic task (digits, arithmetic, Python one-liners) and, character by character, any ASCII
text, so that real benchmarks can be run through the tiny model end to end (with ~0 accuracy, honestly).
Non-ASCII characters map to ``?``.
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIALS = ["[PAD]", "[MASK]", "[EOS]", "[BOS]", "[SEP]"]
CHARS = ["\n", "\t"] + [chr(c) for c in range(32, 127)]
FILE_NAME = "tiny_tokenizer.json"


class CharTokenizer:
    """Maps characters to ids; ids 0-4 are special tokens (pad, mask, eos, bos, sep)."""

    def __init__(self, chars: list[str] | None = None):
        self.chars = list(chars or CHARS)
        self.itos = SPECIALS + self.chars
        self.stoi = {c: i for i, c in enumerate(self.itos) if i >= len(SPECIALS)}
        self.pad_token_id, self.mask_token_id, self.eos_token_id, self.bos_token_id, self.sep_token_id = range(5)
        self._unk = self.stoi["?"]

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(c, self._unk) for c in text]

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        """HF-style call, so wrappers treat every tokenizer alike."""
        return {"input_ids": self.encode(text)}

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i < len(SPECIALS):
                if not skip_special_tokens:
                    out.append(SPECIALS[i])
                continue
            out.append(self.itos[i] if i < len(self.itos) else "?")
        return "".join(out)

    def save_pretrained(self, path: str | Path) -> None:
        Path(path, FILE_NAME).write_text(json.dumps({"type": "char", "chars": self.chars}))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> CharTokenizer:
        data = json.loads(Path(path, FILE_NAME).read_text())
        return cls(data["chars"])
