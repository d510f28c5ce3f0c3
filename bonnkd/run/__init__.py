"""The run directory (``WORKDIR/``): one object that owns every file of a run."""
