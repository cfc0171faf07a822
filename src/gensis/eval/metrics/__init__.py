"""Metrics of the evaluation protocols, equal to the benchmarks' own code (tests compare with its outputs).

- ``retrieval``: revisitop's ``compute_ap``/``compute_map`` (revisited Oxford/Paris, Easy/Medium/Hard)
  and the Copydays ``score_ap_from_ranks_1``.
- ``segmentation``: the DAVIS-2017 toolkit's J (region IoU), F (contour accuracy) and statistics.
"""
