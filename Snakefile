# qkdissect workflow entry point: everything lives in workflow/ (the Snakemake standard layout).
include: "workflow/Snakefile"


# `include:` does not carry the included file's default target over, so the root names it: everything `all` makes.
rule default:
    input:
        rules.all.input,
    default_target: True
