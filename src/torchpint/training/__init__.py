"""Training as time stepping: MGRIT over a network's optimizer steps (Schroder 2017).

``train_mgrit(model, loss_fn, data, steps, ...)`` returns the trained model, the MGRIT
history and the comparison with ordinary serial training.
"""

from torchpint.training.api import (
    SOLVERS,
    SerialTraining,
    TrainMGRITResult,
    Verification,
    curve_points,
    default_tol,
    serial_train,
    solver_options,
    train_mgrit,
    verify,
)
from torchpint.training.engines import (
    AutogradEngine,
    HalfSSELoss,
    SigmoidMLPEngine,
    check_deterministic,
    sigmoid_mlp,
)
from torchpint.training.problem import DIVERGENCE_HINT, TrainingProblem
from torchpint.training.rules import DataRule, make_lr_rule, mix_seed
from torchpint.training.tasks import (
    TASKS,
    Task,
    adder_data,
    adder_task,
    digits_task,
    make_task,
    xor_task,
)

__all__ = [
    "DIVERGENCE_HINT",
    "SOLVERS",
    "TASKS",
    "AutogradEngine",
    "DataRule",
    "HalfSSELoss",
    "SerialTraining",
    "SigmoidMLPEngine",
    "Task",
    "TrainMGRITResult",
    "TrainingProblem",
    "Verification",
    "adder_data",
    "adder_task",
    "check_deterministic",
    "curve_points",
    "default_tol",
    "digits_task",
    "make_lr_rule",
    "make_task",
    "mix_seed",
    "serial_train",
    "sigmoid_mlp",
    "solver_options",
    "train_mgrit",
    "verify",
    "xor_task",
]
