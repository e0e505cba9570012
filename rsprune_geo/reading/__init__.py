"""Reading and tiling.

Find and open rasters (:mod:`.sources`), read and scale their pixels (:mod:`.pixels`, the one layer
that touches raster data) and cut them into a grid of tiles (:mod:`.tiling`). Everything downstream
works on arrays and tile tables.
"""
