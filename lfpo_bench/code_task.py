"""Shared scoring for tasks whose answers are programs: every completion runs in the sandbox, in parallel.

Per-program wall-clock timeouts scale with the reference solution's runtime in the same sandbox:
``max(timeout_floor, timeout_factor * reference_seconds)``. Reference runtimes (and, for evalplus tasks,
expected outputs) are measured once per dataset hash and cached under ``<cache>/code_refs/``.
"""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

from .paths import cache_dir
from .sandbox import CODEC_VERSION, Job, shared_sandbox
from .task import Scored, Task
from .types import Example

log = logging.getLogger(__name__)


class CodeTask(Task):
    family = "code"
    uses_sandbox: ClassVar[bool] = True
    timeout_floor: ClassVar[float] = 3.0  # seconds
    timeout_factor: ClassVar[float] = 5.0  # times the reference solution's runtime

    # ---- to implement ------------------------------------------------------------------------------
    def program(self, ex: Example, completion: str) -> str:
        raise NotImplementedError

    def job(self, ex: Example, program: str, timeout: float) -> Job:
        raise NotImplementedError

    def reference_program(self, ex: Example) -> str:
        raise NotImplementedError

    # ---- shared ------------------------------------------------------------------------------------
    def extract(self, completion: str) -> str:
        from .codeexec import extract_code

        return extract_code(completion)

    def _refs_path(self, split: str):
        # the codec version is part of the key: digests of huge outputs must come from the same encoder
        return cache_dir() / "code_refs" / f"{self.name}-{split}-{self.load_with_hash(split)[1][:16]}-c{CODEC_VERSION}.json"

    def reference_seconds(self, split: str) -> dict[str, float]:
        """Runtime of each problem's reference solution in the sandbox (cached)."""
        path = self._refs_path(split)
        if path.exists():
            return json.loads(path.read_text())
        exs = self.load(split)
        sb = shared_sandbox()
        res = sb.run_many([self.job(e, self.reference_program(e), timeout=60.0) for e in exs])
        bad = [(e.id, r.status, r.detail) for e, r in zip(exs, res) if not r.passed]
        if bad:
            log.warning("%s: %d reference solutions do not pass in the sandbox, e.g. %s", self.name, len(bad), bad[:3])
        out = {e.id: r.seconds for e, r in zip(exs, res)}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out))
        return out

    def plus_expected(self, ex: Example) -> list:
        """evalplus tasks: the canonical solution's output on every input of ``ex``, computed in the sandbox
        once for the whole split and cached."""
        split = ex.meta["split"]
        cache = self.__dict__.setdefault("_plus_expected", {})
        if split not in cache:
            from .codeexec import reference_outputs
            from .sandbox import encode

            path = self._refs_path(split).with_suffix(".expected.json")
            if not path.exists():
                sb = shared_sandbox()
                out = {e.id: [encode(o) for o in reference_outputs(e.answer, sb.run)[0]] for e in self.load(split)}
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(out))
            cache[split] = json.loads(path.read_text())
        from .sandbox import decode

        return [decode(o, None) for o in cache[split][ex.id]]

    def timeout_for(self, ex: Example) -> float:
        split = ex.meta.get("split")
        ref = self.reference_seconds(split).get(ex.id, 1.0) if split else 1.0
        return max(self.timeout_floor, self.timeout_factor * ref)

    def score_batch(self, examples: list[Example], completions: list[str]) -> list[Scored]:
        jobs = []
        for e, c in zip(examples, completions):
            jobs.append(self.job(e, self.program(e, c), self.timeout_for(e)))
        results = shared_sandbox().run_many(jobs)
        return [self.scored(r) for r in results]

    def scored(self, r) -> Scored:
        return Scored(1.0 if r.passed else 0.0, {"timeout": float(r.status == "timeout"), "syntax_error": float(r.status == "error")})

    def score(self, ex: Example, completion: str) -> float:
        return self.score_batch([ex], [completion])[0].score

    def metrics(self, ex: Example, completion: str) -> dict[str, Any]:
        return self.score_batch([ex], [completion])[0].metrics
