"""Latent-space reconstruction (VanRullen & Reddy 2019): decode a VAE-GAN latent, draw it.

The targets are the encoder means of the training images in the latent space of a
VAE-GAN (:mod:`fmrirecon.generative`); a ridge map per latent dimension
(:class:`~fmrirecon.decoding.RidgeDecoder`) predicts them from voxels; the generator
draws the reconstruction from the decoded latent.
"""

from __future__ import annotations

import io
import numpy as np

from ..decoding import DEFAULT_ALPHAS, RidgeDecoder
from .base import ReconstructionMethod


class LatentReconstruction(ReconstructionMethod):
    """Ridge from voxels to VAE-GAN latents; the generator draws the image.

    Parameters
    ----------
    generator : path
        Generator file written by :func:`fmrirecon.generative.train_vaegan` (the
        workflow passes the trained file, or the config's ``generator.weights``).
    alphas : list of float, optional
        Ridge penalties searched per latent dimension.
    n_folds : int
        Cross-validation folds for the penalty.
    device : str
        Torch device for encoding and drawing (``"auto"``: a GPU when visible).
    batch_size : int
        Images per forward pass.
    seed : int

    Notes
    -----
    The fitted method pickles the generator's encoder and decoder weights, so a saved
    model reconstructs (and encodes test images for :meth:`extra_metrics`) without the
    generator file. The generator's training curves reach the report from the
    ``train_generator`` rule (one plot, whichever methods share the generator).
    """

    name = "latent"

    #: Settings of the generator's training, which has its own config section.
    GENERATOR_KEYS = ("latent_dim", "base_channels", "epochs", "lr", "kl_weight",
                      "feature_weight", "adv_weight", "flip", "checkpoint_every", "train_folder")

    @classmethod
    def input_files(cls, settings, locations):
        """The generator it draws with."""
        return {**super().input_files(settings, locations), "generator": locations["generator"]}

    @classmethod
    def check_settings(cls, settings, where=None):
        """As :meth:`ReconstructionMethod.check_settings`; generator training keys are
        named as such (they moved to the config's ``generator`` section)."""
        moved = [key for key in settings or {} if key in cls.GENERATOR_KEYS]
        if moved:
            from .base import SettingsError

            raise SettingsError(f"{where or 'methods.latent'}: {moved[0]!r} trains the generator; "
                                f"it belongs in the config's generator section")
        super().check_settings(settings, where)

    def __init__(self, *, generator=None, alphas=None, n_folds: int = 5,
                 device: str = "auto", batch_size: int = 64, seed: int = 0, **params):
        type(self).check_settings(params)
        super().__init__(seed=seed, **params)
        self.generator = generator
        self.alphas = DEFAULT_ALPHAS if alphas is None else np.asarray(alphas, dtype=np.float64)
        self.n_folds = n_folds
        self.device = device
        self.batch_size = batch_size

    # -- the networks -----------------------------------------------------------------
    def _device(self):
        from ..torchkit import select_device

        return select_device(self.device)

    def _network(self, which: str):
        """The generator's ``encoder`` or ``decoder``, built once from the pickled weights."""
        attr = f"_{which}_net"
        if getattr(self, attr, None) is None:
            import torch

            from ..generative.vaegan import build_networks

            cfg = self.generator_config_
            encoder, decoder, _ = build_networks(cfg["image_size"], cfg["channels"], cfg["latent_dim"],
                                                 cfg.get("base_channels", 32))
            net = encoder if which == "encoder" else decoder
            state = torch.load(io.BytesIO(getattr(self, f"{which}_state_")), map_location="cpu",
                               weights_only=True)
            net.load_state_dict(state)
            setattr(self, attr, net.to(self._device()).eval())
        return getattr(self, attr)

    def _decoder(self):
        """The generator (latent -> image)."""
        return self._network("decoder")

    def _encoder(self):
        """The generator's encoder (image -> latent mean)."""
        return self._network("encoder")

    def __getstate__(self):
        state = self.__dict__.copy()
        # rebuilt from decoder_state_ / encoder_state_ on first use
        state.pop("_decoder_net", None)
        state.pop("_encoder_net", None)
        return state

    # -- ReconstructionMethod ---------------------------------------------------------
    def fit(self, betas, images, groups=None):
        """Encode the training images to latents and fit the ridge map from ``betas``.

        Raises
        ------
        ValueError
            When no generator is configured, or the images' size or channels differ
            from the generator's.
        """
        import torch

        from ..generative.vaegan import _read

        if self.generator is None:
            raise ValueError("methods.latent.generator: no generator file (the workflow trains "
                             "one, or set the config's generator.weights)")
        data = _read(self.generator)
        cfg = dict(data["config"])
        if images.shape[-1] != cfg["channels"] or images.shape[1] > cfg["image_size"]:
            raise ValueError(
                f"{self.generator}: generator draws {cfg['image_size']} px images with "
                f"{cfg['channels']} channel(s) but the stimuli are {tuple(images.shape[1:])}; "
                f"set images.size/channels to match or retrain it")
        # A generator at a larger side (4 * 2**k, e.g. 16 for 10 px patches) reads and
        # draws resized images.
        self.image_shape_ = tuple(images.shape[1:])
        self.generator_config_ = cfg
        for which in ("decoder", "encoder"):
            buffer = io.BytesIO()
            torch.save(data[which], buffer)
            setattr(self, f"{which}_state_", buffer.getvalue())
        self._decoder_net = self._encoder_net = None

        self.train_latents_ = self.encode_targets(images)
        self.decoder_ = RidgeDecoder(self.alphas, self.n_folds, device=self.device, seed=self.seed)
        self.decoder_.fit(betas, self.train_latents_, groups=groups)
        return self

    def encode_targets(self, images):
        """Encoder means of ``images`` (n, H, W, C): the true latents, (n, latent_dim)."""
        from ..generative.vaegan import encode

        side = self.generator_config_["image_size"]
        return encode(self._encoder(), _resized(np.asarray(images, dtype=np.float32), side),
                      self.batch_size)

    def extra_metrics(self, data):
        """Pairwise identification in latent space and attribute decoding.

        ``ident2_latent``: decoded latents against the true latents of the test images
        (:meth:`~fmrirecon.methods.base.ReconstructionMethod.target_identification`).
        ``attribute_<column>``: for each binary column of the stimulus table (e.g.
        ``male``), a classifier trained on the true latents of the training images is
        applied to the decoded latents (VanRullen & Reddy 2019).
        """
        from ..attributes import attribute_accuracy, binary_columns

        out = super().extra_metrics(data)
        if data.stimuli is None:
            return out
        table = data.stimuli.set_index(data.stimuli["stim_file"].astype(str))
        decoded = self.decode(data.test_betas)
        for column in binary_columns(data.stimuli):
            train = table[column].reindex(data.train_stim_files).to_numpy(dtype=float)
            test = table[column].reindex(data.test_stim_files).to_numpy(dtype=float)
            keep_train, keep_test = ~np.isnan(train), ~np.isnan(test)
            if len(np.unique(train[keep_train])) < 2 or not keep_test.any():
                continue
            result = attribute_accuracy(self.train_latents_[keep_train], train[keep_train],
                                        decoded[keep_test], test[keep_test],
                                        n_boot=data.n_boot, seed=data.seed)
            out[f"attribute_{column}"] = {"mean": result["accuracy"], "ci_low": result["ci_low"],
                                          "ci_high": result["ci_high"], "chance": result["chance"]}
        return out

    def decode(self, betas):
        """Decoded latents, shape (n, latent_dim)."""
        return self.decoder_.predict(betas).astype(np.float32)

    def reconstruct(self, betas):
        """Images (n, H, W, C) in [0, 1] drawn by the generator from the decoded latents."""
        return self.draw(self.decode(betas))

    def draw(self, latents: np.ndarray) -> np.ndarray:
        """Images (n, H, W, C) in [0, 1] drawn by the generator from ``latents``."""
        from ..generative.vaegan import decode

        drawn = decode(self._decoder(), latents, self.batch_size)
        side = getattr(self, "image_shape_", drawn.shape[1:])[0]
        return np.clip(_resized(drawn, side), 0, 1)


def _resized(images: np.ndarray, side: int) -> np.ndarray:
    """Images (n, H, W, C) resized to (n, side, side, C) (bilinear; antialiased down)."""
    if images.shape[1] == side:
        return images
    import torch
    from torch.nn import functional as F

    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False,
                      antialias=side < images.shape[1])
    return x.numpy().transpose(0, 2, 3, 1).astype(np.float32)
