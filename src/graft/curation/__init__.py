"""Before the labels can be trusted (issue 25): functions on frozen features (a
:class:`~graft.features.extractor.Features`' ``.vectors``, ``.labels``, ``.paths``).

* :mod:`.labels` -- likely wrong labels from out-of-fold probabilities and neighbours' votes.
* :mod:`.copies` -- exact and near duplicates (re-encoded, resized, slightly cropped copies).
* :mod:`.outliers` -- images far from every other one, tiny or extreme images, small classes.
* :mod:`.wordnet` -- class names -> WordNet synsets -> the ImageNet-1k classes beneath them
  (zero-shot classification from a backbone's own ImageNet classifier).

An audit's decisions are applied where the folders are read: :mod:`graft.data.decisions`.
"""
