"""Serving: ``serve`` (nginx → gunicorn → Flask) and the recommendation API.

Flow: ``serve`` (process supervisor) → ``gunicorn_conf`` → ``app`` (HTTP) → ``handler.invocations`` (pure) →
``codecs`` (wire formats) + ``schema`` (request validation) → ``predict`` (raw ids) → ``ranking`` (numpy).
"""
