"""Generative image models: the VAE-GAN whose latent space the ``latent`` method decodes.

The decoder also serves other methods as an image prior (e.g. deep image reconstruction).
"""

from .vaegan import (
    decode,
    encode,
    generator_config,
    load_encoder,
    load_generator,
    train_generator,
    train_vaegan,
    training_image_paths,
)

__all__ = [
    "decode",
    "encode",
    "generator_config",
    "load_encoder",
    "load_generator",
    "train_generator",
    "train_vaegan",
    "training_image_paths",
]
