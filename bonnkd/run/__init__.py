"""The run directory (``WORKDIR/``): one object owns every file of a run."""
