"""The ``train`` job: hyperparameters, the data roles (train / validation / test), evaluation, and the run that ties
them to a registered recommender and writes the model artifact."""
