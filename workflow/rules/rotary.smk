# Beyond the paper: rotary (RoPE) models (figures.rotary, config/modern.yaml). Their interaction depends on the
# offset d between query and key, W_q^T R(-d) W_k: the offsets store holds its singular values and cosines at
# every offset (language models: 0 to rotary.context - 1; image models: every (dy, dx) of the patch grid), the
# spectrum store each rotation plane's share and the weighted cosine by distance |d|; the two rotary figures
# (workflow/figures.yaml) draw the spectrum store. Models without rotary embedding have none of these: the model
# wildcard matches rotary models only (known ones, or `rotary: true` under models).

rule offsets:
    input:
        manifest="results/weights/{model}.json",
    output:
        directory("results/offsets/{model}.zarr"),
    params:
        config_keys=config_keys(["models", "{model}"], ["rotary", "context"], requests.OffsetsRequest),
        spec=model_spec,
        offsets=offsets_option,
        options=pass_options(requests.OffsetsRequest),
        device=config["analysis"]["device"],
    wildcard_constraints:
        model=names_pattern(ROTARY_CAPABLE),
    threads: modes_resources("threads")
    resources:
        mem_mb=modes_mem_mb,
        runtime=modes_resources("runtime"),
        gpu=1 if uses_gpu() else 0,
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/offsets/{model}.log",
    benchmark:
        "results/benchmarks/offsets/{model}.tsv"
    shell:
        qkdissect(
            "offsets {params.spec:q} --name {wildcards.model:q} --manifest {input.manifest:q} "
            "--offsets {params.offsets:q} {params.options} --device {params.device:q} -q -o {output:q} > {log:q} 2>&1",
            threads=True,
        )


rule spectrum:
    input:
        manifest="results/weights/{model}.json",
        offsets="results/offsets/{model}.zarr",
    output:
        directory("results/spectrum/{model}.zarr"),
    params:
        config_keys=config_keys(["models", "{model}"], requests.SpectrumRequest),
        spec=model_spec,
        options=pass_options(requests.SpectrumRequest),
    wildcard_constraints:
        model=names_pattern(ROTARY_CAPABLE),
    threads: 1
    resources:
        mem_mb=modes_mem_mb,
        runtime=config["resources"]["scores"]["runtime"],
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/spectrum/{model}.log",
    benchmark:
        "results/benchmarks/spectrum/{model}.tsv"
    shell:
        qkdissect(
            "spectrum {params.spec:q} {input.offsets:q} --name {wildcards.model:q} --manifest {input.manifest:q} "
            "{params.options} -q -o {output:q} > {log:q} 2>&1",
        )


# The content core: the modes of the offset-averaged interaction (what survives at long range), a modes store of its
# own. Made by `all` only when rotary.content_core asks (mean or mean:N; a language model's mean is over
# rotary.context tokens); `snakemake results/modes_core/M.zarr` makes one (mean) without it.
rule modes_core:
    input:
        manifest="results/weights/{model}.json",
    output:
        directory("results/modes_core/{model}.zarr"),
    params:
        config_keys=config_keys(["models", "{model}"], ["rotary", "content_core"], requests.ModesRequest),
        spec=model_spec,
        offset=content_core_option,
        options=pass_options(requests.ModesRequest),
        device=config["analysis"]["device"],
    wildcard_constraints:
        model=names_pattern(ROTARY_CAPABLE),
    threads: modes_resources("threads")
    resources:
        mem_mb=modes_mem_mb,
        runtime=modes_resources("runtime"),
        gpu=1 if uses_gpu() else 0,
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/modes_core/{model}.log",
    benchmark:
        "results/benchmarks/modes_core/{model}.tsv"
    shell:
        qkdissect(
            "modes {params.spec:q} --name {wildcards.model:q} --manifest {input.manifest:q} --offset {params.offset:q} "
            "--device {params.device:q} {params.options} -o {output:q} > {log:q} 2>&1",
            threads=True,
        )
