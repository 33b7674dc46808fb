"""``python -m tests.e2e.reliability.slow_simpo ARGS``: the real ``simpo`` CLI with every training
micro-step slowed by ``SIMPO_TEST_STEP_SLEEP`` seconds, so a test can signal or kill it at a
known point of a run that would otherwise finish in a second. The sleep changes no numbers."""

import os
import time

from simpo_cli.cli import main
from simpo_cli.training.trainer import PreferenceTrainer

_step = PreferenceTrainer.training_step


def _slow_step(self, *args, **kwargs):
    time.sleep(float(os.environ.get("SIMPO_TEST_STEP_SLEEP", "0")))
    return _step(self, *args, **kwargs)


PreferenceTrainer.training_step = _slow_step

if __name__ == "__main__":
    main()
