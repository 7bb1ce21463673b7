"""The Snakemake workflow's logic, as plain functions of its validated config (no Snakemake import): what the
config asks for (:mod:`.plan`), the checks and the defaults laid under a user's config (:mod:`.config`), where each
store and figure lives (:mod:`.paths`), what each figure of the figure table reads and what `all` makes
(:mod:`.targets`), and the command lines of the rules (:mod:`.commands`). ``workflow/rules/common.smk`` builds these
from Snakemake's ``config`` and hands their functions to the rules."""
