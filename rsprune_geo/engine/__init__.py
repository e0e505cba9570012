"""The execution engine.

Window tasks that read once and run stage 1 and encoding in one pass, the passes that schedule them
on threads, processes or a Dask cluster, the per-tile columns the driver holds, the numeric kernels
and the run's plan.
"""
