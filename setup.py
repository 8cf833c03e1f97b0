"""Installs the `irl` package (internal reinforcement learning, arXiv 2512.20605)."""
import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent


def _requirements(name: str) -> list[str]:
  lines = (_HERE / name).read_text().splitlines()
  return [l.split('#')[0].strip() for l in lines if l.split('#')[0].strip()]


setuptools.setup(
    name='irl',
    version='0.1.0',
    description='Internal RL: hierarchical RL inside the residual stream of '
                'autoregressive models (JAX/Flax).',
    packages=setuptools.find_packages(include=['irl', 'irl.*']),
    python_requires='>=3.11',
    install_requires=_requirements('requirements.txt'),
    extras_require={
        'test': ['pytest==9.0.3', 'hypothesis==6.155.2'],
        # NAVIX is only the peer in benchmarks/env_throughput.py.
        'bench': ['navix==0.7.4'],
    },
)
