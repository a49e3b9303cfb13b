"""Serving: ``serve`` (nginx → gunicorn → Flask) and the recommendation API.

Flow: ``serve`` (process supervisor) → ``gunicorn_conf`` → ``app`` (HTTP: Flask routes and the ``FastPath``, both
over ``app.Routes``) → ``handler.invocations`` (pure) → ``codecs`` (wire formats) + ``schema`` (request validation)
→ ``predict`` (raw ids) → ``ranking`` (numpy). ``settings`` is the environment, read once; ``errors`` every HTTP
error status and message (nginx's included); ``state`` the worker's model and the workers' readiness.
"""
