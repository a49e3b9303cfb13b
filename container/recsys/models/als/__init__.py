"""Alternating Least Squares on Apache Spark (pyspark): its registration and hyperparameters (``params``), the
recommender (``model``) and the Spark session it fits in (``spark``). Importing this package imports no pyspark:
``params`` is read whenever hyperparameters are parsed, and serving an ALS model needs numpy alone."""
