"""Built-in baseline methods, one module each (installed as ``lfpo_bench.baselines``)."""
