"""Training as time stepping: MGRIT over a network's optimizer steps (Schroder 2017).

``train_mgrit(model, loss_fn, data, steps, lr=...)`` (or with a :class:`TrainingConfig`)
returns the trained model, the MGRIT history and the comparison with ordinary serial
training.
"""

from torchpint.training.api import (
    SerialTraining,
    TrainMGRITResult,
    Verification,
    serial_train,
    train_mgrit,
    verify,
)
from torchpint.training.config import SOLVERS, TrainingConfig
from torchpint.training.engines import HalfSSELoss, sigmoid_mlp
from torchpint.training.problem import TrainingProblem
from torchpint.training.tasks import TASKS, Task, adder_task, digits_task, make_task, xor_task

__all__ = [
    "SOLVERS",
    "TASKS",
    "HalfSSELoss",
    "SerialTraining",
    "Task",
    "TrainMGRITResult",
    "TrainingConfig",
    "TrainingProblem",
    "Verification",
    "adder_task",
    "digits_task",
    "make_task",
    "serial_train",
    "sigmoid_mlp",
    "train_mgrit",
    "verify",
    "xor_task",
]
