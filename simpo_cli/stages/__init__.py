"""Pipeline stages. Each module exposes one ``run_<stage>(cfg, run_dir)`` with no import-time side
effects; the CLI only composes the config and dispatches."""
