"""Container tests: the built image driven the way SageMaker drives it (a package, so its conftest does not
shadow tests/conftest.py for the unit tests that import from it)."""
