# Fit each reconstruction method on one subject's training betas and images.


rule decode:
    input:
        **betas_files("{subject}"),
        voxels=rules.select_voxels.output[0],
        stimuli=BIDS / "stimuli",
    output:
        OUT / "sub-{subject}" / "recon" / "sub-{subject}_desc-{method}_model.pkl",
    params:
        settings=lambda wc: method_settings(wc.method),
        images=config["images"],
        seed=config["seed"],
    threads: 2
    log:
        LOGS / "decode" / "sub-{subject}_desc-{method}.log",
    conda:
        "../../envs/fmrirecon.yaml"
    script:
        "../scripts/decode.py"
