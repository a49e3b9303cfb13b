"""recsys: one SageMaker bring-your-own-container image that trains (NCF / Spark ALS) and serves recommendations."""

from setuptools import find_packages, setup

# torch is pinned exactly: any other version (or an open range) makes pip fetch a multi-GB CUDA build here, and the
# Dockerfile installs the variant it wants (CPU or CUDA) before this package, so this pin is satisfied, not re-fetched.
RUNTIME = [
    "numpy>=1.26",
    "pandas>=2.2,<3",  # Spark warns that pandas >= 3 is not supported
    "pyarrow>=15",
    "torch==2.13.0",
    "pyspark==4.3.0",
    "flask>=3.0",
    "gunicorn>=22",
]

DEV = [
    "pytest>=8",
    "hypothesis>=6",
    "ruff>=0.6",
    "requests>=2.31",
    "moto[server]>=5",
    "sagemaker>=2.250,<3",
]

setup(
    name="recsys",
    version="0.1.0",
    description="SageMaker BYOC recommender: Neural Collaborative Filtering (PyTorch) and ALS (Spark)",
    python_requires=">=3.11",
    package_dir={"": "container"},
    packages=find_packages("container", include=["recsys", "recsys.*"]),
    package_data={"recsys.serving": ["nginx.conf.template"]},
    install_requires=RUNTIME,
    extras_require={"dev": DEV},
    entry_points={
        "console_scripts": [
            "train=recsys.train:main",
            "serve=recsys.serving.serve:main",
        ]
    },
)
