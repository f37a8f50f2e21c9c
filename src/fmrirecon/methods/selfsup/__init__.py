"""Self-supervised encoder-decoder reconstruction (Beliy et al. 2019; Gaziv et al. 2022).

Paired image-fMRI data are scarce, so training has two phases:

1. **Encoder** E (image -> voxels) on the pairs, with an SNR-weighted voxel loss.
2. **Decoder** D (voxels -> image) on the pairs plus two self-supervised cycles through
   the frozen encoder:

   - image cycle: unpaired natural images ``x -> E(x) -> D -> x'``, image loss(x', x);
   - fMRI cycle: unpaired betas (e.g. the test recordings, never their images)
     ``r -> D(r) -> E -> r'``, voxel loss(r', r).

The image loss is pixel MSE + perceptual (deep-feature correlation, through
:class:`fmrirecon.features.FeatureExtractor`) + total variation; the voxel loss is an
SNR-weighted MSE plus a cosine term. ``cycles=False`` trains the same decoder on the
pairs only; ``ablation=True`` trains both decoders from the same encoder and the same
initial weights in one fit, so that the report compares them with everything else equal.

Training writes a checkpoint (weights, optimisers, random states, loss history) after
every ``checkpoint_every`` epochs when ``checkpoint_dir`` is set; a fit with the same
settings and data resumes from it and gives the numbers of an uninterrupted run.

The package: :mod:`.model` (the method), :mod:`.training`, :mod:`.networks`,
:mod:`.losses`, :mod:`.guard` (the encoder's held-out quality), :mod:`.data` (unpaired
images) and :mod:`.metrics` (its own metrics, computed after fitting).
"""

from .data import load_unpaired_images
from .guard import encoder_cv_quality, weighted_r2
from .losses import ImageLoss, snr_weights, total_variation, voxel_loss
from .model import DEFAULTS, SelfSupervisedReconstruction
from .networks import (BACKBONE_LAYERS, ENCODER_ALPHAS, BackboneEncoder, Decoder, Encoder,
                       build_decoder, build_encoder)
from .training import CHECKPOINT_NAME, HISTORY_NAME

__all__ = ["BACKBONE_LAYERS", "CHECKPOINT_NAME", "DEFAULTS", "ENCODER_ALPHAS", "HISTORY_NAME",
           "BackboneEncoder", "Decoder", "Encoder", "ImageLoss", "SelfSupervisedReconstruction",
           "build_decoder", "build_encoder", "encoder_cv_quality", "load_unpaired_images",
           "snr_weights", "total_variation", "voxel_loss", "weighted_r2"]
