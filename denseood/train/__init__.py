"""Training: ``Trainer`` (trainer.py) runs the phases of a ``TrainConfig`` (config.py) over the data plan of
sampling.py, with negatives from negatives.py, the losses of losses.py and the flow monitor of flow_monitor.py.

Import the names from their modules (e.g. ``from denseood.train.trainer import Trainer``); this package file
imports nothing, so that ``import denseood.train.negatives`` stays light. See docs/architecture.md.
"""
