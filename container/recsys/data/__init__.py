"""Data: SageMaker channels → clean, indexed interactions (``Interactions``) with a report of what was dropped."""
