"""Deep-network features of images: the feature space of deep image reconstruction.

One :class:`FeatureExtractor` wraps a torchvision classification network (by name, with
weights from the torchvision weights API or a local checkpoint) or ``"smallconv"``, a
small CNN that runs on a laptop CPU, and returns the activations of named layers
(torchvision's ``create_feature_extractor`` node names). It is differentiable in its
input, so it serves as the loss of pixel optimisation and perceptual losses as well as
for feature extraction. Features are stored in HDF5, one chunked dataset per layer.

No pretrained weights can be downloaded offline; the extractor then runs with a seeded
random initialisation or with a checkpoint trained locally by
:func:`train_small_network`, and its :attr:`FeatureExtractor.provenance` says which.

The package: :mod:`.networks` (smallconv, :func:`build_network`,
:class:`FeatureExtractor`), :mod:`.io` (extraction in batches, HDF5 files),
:mod:`.training` (local training, held-out accuracy), :mod:`.similarity` (feature
identification of reconstructions) and :mod:`.stimuli` (features of a study's stimuli).
"""

from .io import extract_features, read_feature_attrs, read_features, to_tensor, write_features
from .networks import (DEFAULT_LAYERS, IMAGENET_MEAN, IMAGENET_STD, SMALLCONV_INPUT_SIZE,
                       TORCHVISION_INPUT_SIZE, FeatureExtractor, SmallConv, build_network)
from .similarity import feature_identification, feature_similarity
from .stimuli import extract_stimulus_features, stimulus_table
from .training import (load_labelled_images, network_summary, train_feature_network,
                       train_small_network)

__all__ = ["DEFAULT_LAYERS", "IMAGENET_MEAN", "IMAGENET_STD", "SMALLCONV_INPUT_SIZE",
           "TORCHVISION_INPUT_SIZE", "FeatureExtractor", "SmallConv", "build_network",
           "extract_features", "extract_stimulus_features", "feature_identification",
           "feature_similarity", "load_labelled_images", "network_summary", "read_feature_attrs",
           "read_features", "stimulus_table", "to_tensor", "train_feature_network",
           "train_small_network", "write_features"]
