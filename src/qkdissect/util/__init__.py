"""Generic utilities that every layer of the package may import: they import nothing of qkdissect but its errors.

- :mod:`.atomic`: an output written under a temporary name and renamed into place only when complete
  (:func:`~.atomic.atomic_path`), and the fault-injection points of a write (:func:`~.atomic.failpoint`);
- :mod:`.ownership`: what an output path may replace (an output owns only what its command writes);
- :mod:`.locks`: one writer per output (``OUT.lock`` beside it);
- :mod:`.lifeline`: a command lives only as long as the job that started it;
- :mod:`.clock`: the time an artefact records (:func:`~.clock.utc_now`);
- :mod:`.hashing`: the sha256 of a file (:func:`~.hashing.sha256_file`).

Nothing is imported here: each module is imported where it is used.
"""
