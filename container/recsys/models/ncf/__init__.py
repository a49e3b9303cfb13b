"""Neural Collaborative Filtering (GMF, MLP, NeuMF) on PyTorch: its registration and hyperparameters (``params``),
the recommender (``model``), its network (``net``), negative sampling (``sampler``) and the training loop
(``trainer``). Importing this package imports no torch: ``params`` is read whenever hyperparameters are parsed."""
