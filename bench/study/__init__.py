"""Studies: plans of stages (`plans`, `sweep_plan`), their keys and done-markers (`keys`, `study`), the work
of each stage (`work`, `worker`), where it runs (`executors`), the ledger and the rendered report."""
