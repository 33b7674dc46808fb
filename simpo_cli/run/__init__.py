"""Running a stage: the run directory and its records, preflight (compose + validate before Hydra
makes a directory), and multi-process launch."""
