"""DeTrack (Zhou et al., NeurIPS 2024): in-model latent denoising for visual object tracking,
written from the paper (DESIGN.md 1.4), with fused box-branch kernels.

Modules: model (ViT + denoising blocks), box_branch (reference box branch), refine (box
refiner, trajectory memory, bin mapping), crop (device-side OSTrack crops), memory (visual
memory + score gate), tracker (DeTrack), train (losses, training step), fused (fused box branch,
`fasttrack.patch` rule), graph (CUDA-graph capture of the step), bench (latency / throughput /
FLOPs).
"""
from .box_branch import BoxBranch
from .model import DeTrackConfig, DeTrackNet
from .tracker import DeTrack

__all__ = ["DeTrack", "DeTrackConfig", "DeTrackNet", "BoxBranch"]
