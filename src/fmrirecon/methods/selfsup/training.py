"""The training of the self-supervised method: encoder phase, decoder phase, cycles.

:class:`Training` is a mixin of :class:`~fmrirecon.methods.selfsup.model.SelfSupervisedReconstruction`:
its methods read the model's settings, networks and the fit's ``_data``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ...torchkit import atomic_save, load_checkpoint, progress, rng_states, set_rng_states
from .guard import _group_bootstrap, weighted_r2
from .losses import ImageLoss, voxel_loss

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "selfsup_checkpoint.pt"
HISTORY_NAME = "selfsup_history.tsv"


@dataclass
class _Run:
    """The state of one training run: what a checkpoint holds besides the networks."""

    gen: torch.Generator
    opt_e: object
    opt_d: object
    opt_p: object
    encoder_epochs: int
    ckpt_dir: Path | None
    history: list = field(default_factory=list)
    start: dict = field(default_factory=lambda: {"encoder": 0, "decoder": 0})
    best: tuple | None = None  # (held-out loss, epoch, encoder state) with encoder_val_fraction

    @property
    def ckpt_path(self) -> Path | None:
        return None if self.ckpt_dir is None else self.ckpt_dir / CHECKPOINT_NAME


class Training:
    """Training methods of the self-supervised method (see the module docstring)."""

    def _image_loss(self):
        s = self.settings
        extractor = None
        if s["perceptual_weight"] > 0:
            extractor = self.feature_extractor(s["perceptual_layers"])
            self.perceptual_provenance_ = extractor.provenance
            log.info("selfsup perceptual loss: %s", extractor.provenance)
        return ImageLoss(extractor, s["pixel_weight"], s["perceptual_weight"], s["tv_weight"])


    def _train(self):
        """Phase 1, the encoder on the pairs; phase 2, the decoder(s), encoder frozen.

        Checkpoints after every ``checkpoint_every`` epochs of each phase (with
        ``checkpoint_dir``); a fit of the same settings and data resumes from the last.
        """
        s = self.settings
        run = self._start_run()
        bar = progress(s["progress"], run.encoder_epochs + s["decoder_epochs"],
                       sum(run.start.values()), desc="selfsup")
        self._encoder_phase(run, bar)
        self.encoder_.eval()
        for p in self.encoder_.parameters():
            p.requires_grad_(False)
        self._encoder_guard()
        self.cycle_noise_sd_ = self._cycle_noise_sd()
        self._decoder_phase(run, bar)
        bar.close()
        self.history_ = pd.DataFrame(run.history)
        for net in (self.decoder_, self.pairs_decoder_):
            if net is not None:
                net.eval()

    def _start_run(self) -> "_Run":
        """Optimisers and the training state, resumed from a checkpoint of this fit."""
        s = self.settings
        gen = torch.Generator().manual_seed(self.seed)  # every draw of the training
        # A BackboneEncoder has no trainable parameter (its read-out is fitted in closed
        # form before this): no encoder epochs then.
        trainable = [p for p in self.encoder_.parameters() if p.requires_grad]
        opt_e = torch.optim.AdamW(trainable, lr=s["lr_encoder"],
                                  weight_decay=s["weight_decay"]) if trainable else None
        opt_d = torch.optim.AdamW(self.decoder_.parameters(), lr=s["lr_decoder"],
                                  weight_decay=s["weight_decay"])
        opt_p = None if self.pairs_decoder_ is None else torch.optim.AdamW(
            self.pairs_decoder_.parameters(), lr=s["lr_decoder"], weight_decay=s["weight_decay"])
        ckpt_dir = Path(s["checkpoint_dir"]) if s["checkpoint_dir"] else None
        run = _Run(gen=gen, opt_e=opt_e, opt_d=opt_d, opt_p=opt_p,
                   encoder_epochs=s["encoder_epochs"] if trainable else 0, ckpt_dir=ckpt_dir)
        # a checkpoint of other settings or data cannot continue this fit
        state = load_checkpoint(run.ckpt_path, self._fingerprint) \
            if run.ckpt_path is not None and s["resume"] else None
        if state is not None and "rng" not in state:
            log.warning("%s: written before the shared torch kit (no 'rng' states); starting over",
                        run.ckpt_path)
            state = None
        if state is not None:
            self.encoder_.load_state_dict(state["encoder"])
            self.decoder_.load_state_dict(state["decoder"])
            if opt_e is not None:
                opt_e.load_state_dict(state["opt_e"])
            opt_d.load_state_dict(state["opt_d"])
            if opt_p is not None:
                self.pairs_decoder_.load_state_dict(state["pairs_decoder"])
                opt_p.load_state_dict(state["opt_p"])
            set_rng_states(state["rng"], gen)
            run.history, run.start, run.best = state["history"], state["start"], state.get("encoder_best")
            log.info("selfsup: resumed from %s at %s", run.ckpt_path, run.start)
        return run

    def _checkpoint(self, run: "_Run", phase_start: dict) -> None:
        """Write the whole training state (atomically) and the loss curves so far."""
        if run.ckpt_path is None:
            return
        run.ckpt_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "fingerprint": self._fingerprint, "start": phase_start, "history": run.history,
            "encoder": self.encoder_.state_dict(), "decoder": self.decoder_.state_dict(),
            "opt_e": None if run.opt_e is None else run.opt_e.state_dict(),
            "opt_d": run.opt_d.state_dict(),
            "rng": rng_states(run.gen), "encoder_best": run.best,
        }
        if run.opt_p is not None:
            state["pairs_decoder"] = self.pairs_decoder_.state_dict()
            state["opt_p"] = run.opt_p.state_dict()
        atomic_save(state, run.ckpt_path)
        pd.DataFrame(run.history).to_csv(run.ckpt_dir / HISTORY_NAME, sep="\t", index=False)

    def _encoder_phase(self, run: "_Run", bar) -> None:
        """Phase 1: the encoder on the pairs (its epoch of lowest held-out loss kept)."""
        s = self.settings
        for epoch in range(run.start["encoder"], run.encoder_epochs):
            sums = self._encoder_epoch(run.opt_e, run.gen)
            if self._data["enc_val"] is not None:
                sums["heldout"] = self._encoder_heldout_loss()
                if run.best is None or sums["heldout"] < run.best[0]:
                    run.best = (sums["heldout"], epoch + 1, copy.deepcopy(
                        {k: v.detach().cpu() for k, v in self.encoder_.state_dict().items()}))
            run.history.append({"phase": "encoder", "variant": "pairs", "epoch": epoch + 1, **sums})
            bar.update(1)
            bar.set_postfix_str(f"encoder loss {sums['loss']:.4f}")
            if (epoch + 1) % s["checkpoint_every"] == 0 or epoch + 1 == run.encoder_epochs:
                self._checkpoint(run, {"encoder": epoch + 1, "decoder": 0})
        self.encoder_epoch_ = run.encoder_epochs
        if run.best is not None:
            # The epoch of lowest held-out loss: later ones fit the pairs' noise.
            self.encoder_.load_state_dict(run.best[2])
            self.encoder_epoch_ = run.best[1]
            log.info("selfsup: encoder of epoch %d (held-out loss %.4f)", run.best[1], run.best[0])

    def _decoder_phase(self, run: "_Run", bar) -> None:
        """Phase 2: the decoder(s) on the pairs and the cycles, encoder frozen."""
        s = self.settings
        image_loss = self._image_loss() if s["decoder_epochs"] > run.start["decoder"] else None
        for epoch in range(run.start["decoder"], s["decoder_epochs"]):
            rows = self._decoder_epoch(run.opt_d, run.opt_p, image_loss, run.gen)
            for variant, sums in rows.items():
                run.history.append({"phase": "decoder", "variant": variant, "epoch": epoch + 1,
                                    **sums})
            bar.update(1)
            bar.set_postfix_str(f"decoder loss {rows[next(iter(rows))]['loss']:.4f}")
            if (epoch + 1) % s["checkpoint_every"] == 0 or epoch + 1 == s["decoder_epochs"]:
                self._checkpoint(run, {"encoder": run.encoder_epochs, "decoder": epoch + 1})

    def _encoder_guard(self):
        """Turn the cycles off when the frozen encoder does not beat the mean predictor.

        The encoder's held-out quality is the out-of-fold SNR-weighted R2 of a backbone
        read-out (:func:`encoder_cv_quality`), or, for a learned encoder, its R2 on the
        ``encoder_val_fraction`` pairs held out of its training. The cycles pass the
        decoder's output through the encoder: through an encoder that predicts nothing
        they teach the decoder nothing true (on a real V1 recording they took it to
        chance), so without ``encoder_guard: false`` they stay on only when the lower
        95% bound of that R2 is above 0.
        """
        s, d = self.settings, self._data
        if self.encoder_quality_ is None and d["enc_val"] is not None:
            val, train = d["enc_val"], d["enc_train"]
            with torch.no_grad():
                pred = torch.cat([self.encoder_(d["x"][i].to(self.device_)).cpu()
                                  for i in torch.split(val, 256)]).numpy().astype(np.float64)
            z = d["z"].numpy().astype(np.float64)
            baseline = z[val.numpy()] - z[train.numpy()].mean(0)
            w = self.voxel_weights_.astype(np.float64)
            self.encoder_quality_ = {
                "r2": weighted_r2(z[val.numpy()], pred, baseline, w),
                **_group_bootstrap(z[val.numpy()], pred, baseline, w, d["ids"][val.numpy()],
                                   self.seed, 1000)}
        q = self.encoder_quality_
        self.cycles_on_ = bool(s["cycles"])
        if q is not None:
            log.info("selfsup encoder: held-out SNR-weighted R2 %.4f [%.4f, %.4f] against the "
                     "mean predictor", q["r2"], q["ci_low"], q["ci_high"])
        if not s["cycles"] or not s["encoder_guard"]:
            return
        if q is None:
            note = ("selfsup: the encoder is not measured on held-out pairs "
                    "(encoder_val_fraction 0): cycles kept on without the encoder guard")
        elif not q["ci_low"] > 0:
            self.cycles_on_ = False
            note = (f"selfsup: the encoder does not beat the mean predictor on held-out pairs "
                    f"(SNR-weighted R2 {q['r2']:.3f} [{q['ci_low']:.3f}, {q['ci_high']:.3f}]): "
                    f"cycles turned off, the decoder learns from the pairs only")
        else:
            return
        log.warning(note)
        self.guards_.append(note)

    def _batches(self, n, gen):
        perm = torch.randperm(n, generator=gen)
        bs = self.settings["batch_size"]
        return [perm[i:i + bs] for i in range(0, n, bs)]

    def _encoder_heldout_loss(self):
        s, d, dev = self.settings, self._data, self.device_
        self.encoder_.eval()
        with torch.no_grad():
            val = d["enc_val"]
            loss = voxel_loss(self.encoder_(d["x"][val].to(dev)), d["z"][val].to(dev), d["w"],
                              s["cosine_weight"])
        return float(loss)

    def _cycle_noise_sd(self) -> torch.Tensor:
        """Per-voxel sd of the noise added to the encoded images of the image cycle.

        A number gives every voxel that sd. ``"residual"``: each voxel's sd of the
        frozen encoder's residual ``z - E(x)`` on the held-out pairs (every pair
        without ``encoder_val_fraction``), so encoded images carry as much noise as
        measured betas and the image cycle trains the decoder on inputs like those it
        decodes; a clean ``E(x)`` teaches it to trust voxel patterns that measured
        betas bury in noise.
        """
        setting, d = self.settings["cycle_noise"], self._data
        n_vox = d["z"].shape[1]
        if setting != "residual":  # a number, checked by fit
            return torch.full((n_vox,), float(setting))
        rows = d["enc_val"] if d["enc_val"] is not None else torch.arange(len(d["z"]))
        with torch.no_grad():
            residual = torch.cat([d["z"][idx] - self.encoder_(d["x"][idx].to(self.device_)).cpu()
                                  for idx in torch.split(rows, 256)])
        return residual.std(0, correction=0)

    def _encoder_epoch(self, opt, gen):
        s, d, dev = self.settings, self._data, self.device_
        self.encoder_.train()
        total, count = 0.0, 0
        rows = d["enc_train"]
        for idx in self._batches(len(rows), gen):
            idx = rows[idx]
            x, z = d["x"][idx].to(dev), d["z"][idx].to(dev)
            loss = voxel_loss(self.encoder_(x), z, d["w"], s["cosine_weight"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        return {"loss": total / count, "pairs": total / count}

    def _cycle_batch(self, key, gen):
        data = self._data[key]
        if data is None:
            return None
        bs = self.settings["batch_size"]
        idx = torch.randint(len(data), (min(bs, len(data)),), generator=gen)
        return data[idx].to(self.device_)

    def decoder_losses(self, decoder, image_loss, x, z, xu=None, zu=None, noise=None):
        """The decoder-phase loss terms on one batch (dict of scalar tensors).

        ``pairs``: image loss of D(z) against x; ``image_cycle``: image loss of
        D(E(xu) + noise) against xu; ``fmri_cycle``: voxel loss of E(D(zu)) against zu.
        Missing inputs leave their term out.
        """
        s = self.settings
        out = {"pairs": image_loss(decoder(z), x)}
        if xu is not None:
            zhat = self.encoder_(xu)
            if noise is not None:
                zhat = zhat + noise
            out["image_cycle"] = image_loss(decoder(zhat), xu)
        if zu is not None:
            out["fmri_cycle"] = voxel_loss(self.encoder_(decoder(zu)), zu, self._data["w"],
                                           s["cosine_weight"])
        return out

    def _decoder_epoch(self, opt_d, opt_p, image_loss, gen):
        s, d, dev = self.settings, self._data, self.device_
        weights = {"pairs": 1.0, "image_cycle": s["image_cycle_weight"],
                   "fmri_cycle": s["fmri_cycle_weight"]}
        variants = {}
        if s["cycles"]:
            variants["cycles"] = (self.decoder_, opt_d)
        if opt_p is not None:
            variants["pairs"] = (self.pairs_decoder_, opt_p)
        elif not s["cycles"]:
            variants["pairs"] = (self.decoder_, opt_d)
        sums = {v: {} for v in variants}
        count = 0
        for idx in self._batches(len(d["x"]), gen):
            x, z = d["x"][idx].to(dev), d["z"][idx].to(dev)
            # Draw every batch whether or not a variant uses it: the random stream,
            # hence the pair order, is then the same with and without cycles.
            xu, zu = self._cycle_batch("xu", gen), self._cycle_batch("zu", gen)
            noise = None
            if xu is not None:
                noise = (torch.randn((len(xu), d["z"].shape[1]), generator=gen)
                         * self.cycle_noise_sd_).to(dev)
            for variant, (decoder, opt) in variants.items():
                decoder.train()
                cyc = variant == "cycles" and self.cycles_on_
                terms = self.decoder_losses(decoder, image_loss, x, z, xu if cyc else None,
                                            zu if cyc else None, noise)
                loss = sum(weights[k] * v for k, v in terms.items())
                opt.zero_grad()
                loss.backward()
                opt.step()
                acc = sums[variant]
                acc["loss"] = acc.get("loss", 0.0) + loss.item() * len(idx)
                for k, v in terms.items():
                    acc[k] = acc.get(k, 0.0) + v.item() * len(idx)
            count += len(idx)
        return {v: {k: t / count for k, t in acc.items()} for v, acc in sums.items()}

    # -- using the fitted model ---------------------------------------------------

