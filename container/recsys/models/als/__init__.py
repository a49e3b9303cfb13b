"""Alternating Least Squares on Apache Spark (pyspark): the recommender (``model``) and the Spark session it fits in
(``spark``)."""
