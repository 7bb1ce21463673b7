"""Rehearsals of the paper's run without its downloads: stand-ins for the paper's weights (:mod:`rehearsal.hub`,
described by :mod:`rehearsal.hub_repos`) that hold exactly what the real files hold, with made-up tensor values;
real photographs laid out as the paper's datasets (:mod:`rehearsal.datasets`); and the run of
``config/paper.yaml`` on them through Snakemake, with its cost (:mod:`rehearsal.run`, ``make rehearsal``)."""
