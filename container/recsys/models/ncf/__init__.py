"""Neural Collaborative Filtering (GMF, MLP, NeuMF) on PyTorch: the recommender (``model``), its network (``net``),
negative sampling (``sampler``) and the training loop (``trainer``)."""
