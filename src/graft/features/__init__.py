"""Frozen features: the extraction engine and scikit-learn transformer (:mod:`.extractor`), the
on-disk feature cache (:mod:`.cache`), forked extraction workers (:mod:`.workers`)."""
