"""The example pipelines' stage processors: ``documents`` (NEW → CLASSIFICATION → DATA EXTRACTION →
PROCESSING → DONE) and ``products`` (DISCOVERY → … → NOTIFICATION).

Workers import them through ``CONVEYOR_STAGE_MODULES``; the definitions that run them are
``examples/document-pipeline.yaml`` and ``examples/product-pipeline.yaml``.
"""
