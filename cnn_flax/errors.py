"""Errors that are the user's to fix: entry points print them as one line and exit with code 2."""


class UserError(Exception):
  """A problem with the user's input (config, data, workdir). The message names the value and the fix."""


class TrainingDiverged(Exception):
  """The loss (or the parameters) became non-finite; the message names the step and the last good checkpoint."""


class TrainingStopped(Exception):
  """The run was asked to stop (SIGTERM: preemption, a scheduler) and saved a checkpoint to resume from."""
