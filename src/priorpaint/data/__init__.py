"""Training images from any source, as float (B, C, H, W) in [-1, 1].

Sources: scikit-learn's digits (no download), a folder of images, MNIST IDX files, and
WebDataset shards (``shards.py``). All map-style sources batch through one step-indexed
sampler, so resuming and DDP see exactly the data a straight single-process run sees.
"""

from .datamodule import SOURCES, PriorDataModule, build_dataset, images_of
from .image_folder import ImageFolder, training_images
from .memory import TensorImages, find_mnist, load_digits_images, load_mnist_images, read_idx
from .step_batch_sampler import StepBatchSampler

__all__ = [
    "PriorDataModule", "build_dataset", "images_of", "SOURCES",
    "ImageFolder", "training_images", "TensorImages", "load_digits_images", "load_mnist_images",
    "read_idx", "find_mnist", "StepBatchSampler",
]
