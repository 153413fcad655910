"""Started by test_distributed.py under `accelerate launch` (FSDP or DeepSpeed, 2 processes): train straight through, train
again with a crash after the checkpoint at update 2, resume, and write both runs' full parameters (rank 0)."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_trainer import SMALL, crash_after_checkpoint, fresh, method  # noqa: E402

from lfpo_bench.distributed import world  # noqa: E402
from lfpo_bench.registry import TASKS  # noqa: E402
from lfpo_bench.trainer import TrainConfig, Trainer  # noqa: E402


def main(out: Path, name: str) -> None:
    d = world()
    task = TASKS.get("sudoku4")()
    cfg = TrainConfig(**SMALL)
    straight = fresh()
    Trainer(straight, task, method(name), cfg, out / "a", show_progress=False, dist=d).fit()

    interrupted = fresh()
    t = crash_after_checkpoint(Trainer(interrupted, task, method(name), cfg, out / "b", show_progress=False, dist=d))
    try:
        t.fit()
    except KeyboardInterrupt:
        pass
    resumed = fresh()
    r = Trainer(resumed, task, method(name), cfg, out / "b", show_progress=False, dist=d).fit(resume=True)
    a, b = d.trainable_state(straight.module), d.trainable_state(resumed.module)
    # FSDP parameters are DTensor shards; ZeRO-3 ones hold their partition in ds_tensor
    sharded = sum(type(p).__name__ == "DTensor" or hasattr(p, "ds_tensor") for p in resumed.module.parameters())
    if d.is_main:
        torch.save({"straight": a, "resumed": b}, out / "params.pt")
        (out / "summary.json").write_text(json.dumps({"updates": [e["update"] for e in r.history], "sharded_params": sharded,
                                                      "world_size": d.world_size, "engine": d.engine,
                                                      "stage": getattr(d, "stage", None)}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
