"""The prior bank.

Labelled scene folders, the profiles that carry what a run takes from a bank for one encoder, the
centroids fitted on it and the scene metric its labels shape.
"""
