"""recsys — a SageMaker bring-your-own-container recommender (NCF on PyTorch, ALS on Spark).

Flow: ``data`` (channels → Interactions) → ``models`` (a Recommender is fitted) → ``artifact`` (/opt/ml/model)
→ ``serving`` (nginx → gunicorn → Flask). ``train`` ties the first three together under SageMaker's contract.
"""

__version__ = "0.1.0"
