"""Where every result came from: the records each artefact carries (:mod:`.records`), the figures' records and
their writing (:mod:`.figures`), the audit that re-checks them (:mod:`.audit`), the RO-Crate of a results folder
(:mod:`.crate`) and the pages readers see (:mod:`.pages`)."""
