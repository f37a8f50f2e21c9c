# The generative model of the latent method (and of a dir entry's generator prior): a
# VAE-GAN trained on the training stimuli plus unpaired images (generator.train_folder),
# or external weights (generator.weights). Its settings are the config's generator section.
GENERATOR_SETTINGS = config["generator"]
_TRAIN_FOLDERS = GENERATOR_SETTINGS["train_folder"] or []
if isinstance(_TRAIN_FOLDERS, str):
    _TRAIN_FOLDERS = [_TRAIN_FOLDERS]
_TRAIN_FOLDERS = [resolve_folder(folder, UNPAIRED_SETS, UNPAIRED) for folder in _TRAIN_FOLDERS]

# The generator file the methods use: external weights skip training.
GENERATOR = Path(GENERATOR_SETTINGS["weights"]) if GENERATOR_SETTINGS["weights"] else OUT / "generator" / "generator.pt"


# Imported betas keep their images per subject: the generator learns from the first's.
_GENERATOR_STIMULI = str(STIMULI).format(subject=SUBJECTS[0]) if IMPORTED else STIMULI


rule train_generator:
    input:
        stimuli=_GENERATOR_STIMULI,
        folders=_TRAIN_FOLDERS,
    output:
        model=OUT / "generator" / "generator.pt",
        curves=OUT / "generator" / "generator_curves.tsv",
    log:
        LOGS / "train_generator.log",
    benchmark:
        BENCHMARKS / "train_generator.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        settings={k: v for k, v in GENERATOR_SETTINGS.items() if k not in ("weights", "train_folder")},
        images=config["images"],
        seed=config["seed"],
    script:
        "../scripts/train_generator.py"


# The files each method needs (a trained network, this generator, a procedural image
# set): the methods declare them (ReconstructionMethod.input_files), at these places.
METHOD_LOCATIONS = {
    "features": FEATURES,
    "generator": GENERATOR,
    "unpaired_sets": UNPAIRED_SETS,
    "unpaired_root": UNPAIRED,
}
for _implementation in IMPLEMENTATIONS:
    METHOD_FILES.setdefault(_implementation, []).append(
        lambda settings, implementation=_implementation: get_method(implementation).input_files(
            settings, METHOD_LOCATIONS
        )
    )

# When a configured method draws with the trained generator, its training curves go into
# the report.
_USES_GENERATOR = any(GENERATOR in method_files(SimpleNamespace(method=m)).values() for m in METHODS)
GENERATOR_CURVES = (
    [rules.train_generator.output.curves] if _USES_GENERATOR and not GENERATOR_SETTINGS["weights"] else []
)
