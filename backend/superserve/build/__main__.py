"""``python -m superserve.build``: calibrate, select and profile a trained SuperNet (``build/pipeline.py``)."""

from .pipeline import main

main()
