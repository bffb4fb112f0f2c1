from setuptools import find_packages, setup

setup(
    name="scaleplan",
    version="0.1.0",
    description="Plan and run LLM pre-training: scaling laws, memory and layout planning, training.",
    packages=find_packages(include=["trainer*", "parallel*", "planner*", "launch*"]),
    python_requires=">=3.10",
    install_requires=[
        "numpy", "scipy", "pydantic>=2", "PyYAML", "matplotlib", "rich", "tqdm",
        "tensorboard", "tokenizers", "safetensors",
    ],
    # hf: `transformers` itself, to load an exported folder (import and export need only safetensors)
    extras_require={"train": ["torch>=2.4", "deepspeed"], "hf": ["transformers>=5"]},
    entry_points={"console_scripts": ["scaleplan=launch.cli:main"]},
)
