"""Built-in tasks, one module each (installed as ``lfpo_bench.tasks``)."""
