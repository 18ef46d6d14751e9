"""Training entry points (DESIGN.md section 2): the DeTrack training loop (detrack.py, behind
`fasttrack train detrack`), its data sources (data.py: synthetic sequences on the fly, GOT-10k /
LaSOT through the eval readers, the held-out val split) and initialisation from an MAE / ViT-B
checkpoint (vit_init.py). The model's own losses and batch sampling stay with the model
(fasttrack.trackers.detrack.train).
"""
from .data import TrainingData, validation_sequences
from .detrack import CONFIGS, TrainOptions, heldout_ao, train_detrack

__all__ = ["CONFIGS", "TrainOptions", "TrainingData", "heldout_ao", "train_detrack",
           "validation_sequences"]
