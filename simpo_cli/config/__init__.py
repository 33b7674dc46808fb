"""Configuration: structured schemas of every config group and stage, composition, and the checks
that run before a stage makes its run directory."""
