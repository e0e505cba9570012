"""The run as stored.

Its vocabulary (statuses, reasons, columns), its typed record, the inputs table, the tile table's
parts and the run folder or GeoPackage that holds them.

The package is ``runs`` (not ``run``): :func:`rsprune_geo.run` is the public entry point, and a
subpackage of the same name would replace it on import.
"""
