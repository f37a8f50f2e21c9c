"""Deep image reconstruction (Shen, Horikawa, Majima & Kamitani 2019).

Voxels are decoded into the features of several layers of a deep network, one linear
regression per feature unit (features z-scored with training statistics; optionally on
the voxels that correlate best with that unit in training, as the Kamitani lab code
does). An image is then optimised so that its features match the decoded ones across
layers, each layer's error normalised by the decoded features' norm, either directly
in pixel space with image priors (total variation, jitter) or in the input space of a
deep generator network.

Departures from the paper, for a laptop and no internet: the default network is a
small CNN (``smallconv``), trained locally or randomly initialised (see
:attr:`DeepImageReconstruction.provenance_`); the optimiser is Adam on all test images
at once instead of per-image gradient descent with momentum.

The package: :mod:`.model` (the method), :mod:`.decoders` (per-unit voxel selection),
:mod:`.inversion` (images or latents optimised to match features), :mod:`.scores` and
:mod:`.metrics` (its own metrics, computed after fitting).
"""

from .decoders import VoxelSelectionRidge
from .inversion import GeneratorPrior, PixelPrior, invert_features
from .model import DeepImageReconstruction
from .scores import decoded_feature_accuracy, decoded_feature_scores, identification_scores

__all__ = ["DeepImageReconstruction", "GeneratorPrior", "PixelPrior", "VoxelSelectionRidge",
           "decoded_feature_accuracy", "decoded_feature_scores", "identification_scores",
           "invert_features"]
