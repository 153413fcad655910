"""lfpo-bench: RL with verifiable rewards on masked diffusion language models.

The public surface is small on purpose:

- ``lfpo_bench.decoding.Decoding`` and ``lfpo_bench.sampler.generate``: one decoding setting, the one sampler;
- ``lfpo_bench.models.loader.load_model``: tiny built-in model, local checkpoints, hub ids;
- ``lfpo_bench.registry``: ``TASKS`` and ``METHODS`` by name (lazy: listing imports no model code);
- ``lfpo_bench.trainer.Trainer``: the one RL loop; ``lfpo_bench.evaluate.evaluation_stage``: the one evaluation;
- ``lfpo_bench.eval_job.run_eval`` / ``lfpo_bench.train_job.run`` / ``lfpo_bench.sweep.sweep``: the CLI's work.
"""

__version__ = "0.1.0"


def _map_source_dirs() -> None:
    """``tasks/`` and ``baselines/`` live beside ``lfpo_bench/`` in the repository and are installed as
    ``lfpo_bench.tasks`` / ``lfpo_bench.baselines``. When the package is imported straight from a source
    checkout (e.g. ``python -m lfpo_bench.cli`` in the repo root), map them the same way here."""
    import sys
    from importlib.util import module_from_spec, spec_from_file_location
    from pathlib import Path

    here = Path(__file__).resolve().parent
    root = here.parent
    if not (root / "pyproject.toml").exists():
        return
    for sub in ("tasks", "baselines"):
        name = f"lfpo_bench.{sub}"
        init = root / sub / "__init__.py"
        if name in sys.modules or (here / sub).exists() or not init.exists():
            continue
        spec = spec_from_file_location(name, init, submodule_search_locations=[str(root / sub)])
        mod = module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)


_map_source_dirs()
