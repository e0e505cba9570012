"""The method's stages, in the order data flows through them.

- :mod:`.budget`: how many tiles have data, pass stage 1 and are kept (one :class:`~.budget.Budget`);
- :mod:`.information` and :mod:`.stage1`: stage 1, the information filter (entropy against the
  prior bank's floor, or the paper's global cut);
- :mod:`.priorbank`: the labelled scene datasets both stages judge against;
- :mod:`.embedding`, :mod:`.clustering` and :mod:`.stage2`: stage 2, tiles embedded, assigned to
  the bank's scene centroids;
- :mod:`.selection`: the budget shared among clusters and tiles picked centroid-first.
"""
