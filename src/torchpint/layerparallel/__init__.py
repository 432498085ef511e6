"""Layer-parallel training: MGRIT across the layers of a residual network, forward and
adjoint, on the core's reusable solver (Günther, Ruthotto, Schroder, Cyr, Gauger 2020).

``LayerParallel(open, steps, close, ...)`` is an ``nn.Module`` trained like any other;
``serial()`` gives the same network as an ordinary ``nn.Sequential``; ``conv_resnet``
and ``gpt_layer_parallel`` build the networks of ``train-layer-parallel``; ``refine``
makes a trained shallow network the start of a deeper one (multilevel initialisation);
``layer_parallel_time`` models a training step on P ranks, ``choose_layer_parallel``
picks the hierarchy by it (``equal_accuracy``: at a measured equal gradient error);
``gradient_check`` compares a network's output and gradient with exact backprop;
``AdaptiveIterations`` raises the iterations, up to exact, when that error outgrows the
gradient during training.
"""

from torchpint.layerparallel.adaptive import AdaptiveIterations
from torchpint.layerparallel.check import equal_accuracy, gradient_check
from torchpint.layerparallel.costmodel import choose_layer_parallel, layer_parallel_time
from torchpint.layerparallel.models import conv_resnet, gpt_layer_parallel
from torchpint.layerparallel.module import LayerParallel, ResidualStep
from torchpint.layerparallel.nested import refine
from torchpint.layerparallel.report import SolveReport

__all__ = ["AdaptiveIterations", "LayerParallel", "ResidualStep", "SolveReport",
           "choose_layer_parallel", "conv_resnet", "equal_accuracy", "gpt_layer_parallel",
           "gradient_check", "layer_parallel_time", "refine"]
