"""The web dashboard's files (HTML, JavaScript modules, CSS), served by :mod:`trellis.api`."""
