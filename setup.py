"""Installs normprop_tf: Normalization Propagation (Arpit et al., ICML 2016).

`pip install .` installs the backend-independent core (the layers, the NIN
models, `export.fold`): Keras and NumPy, for any Keras backend. The
TensorFlow side (data preparation, the tf.data pipeline, training with
tf.distribute, TensorBoard, gin) is the `tf` extra: `pip install '.[tf]'`.
The Keras-only runner (`python -m normprop_tf.train_jax`, for machines with
JAX and no TensorFlow) is the `fit` extra. `make train` and `make test`
install `.[tf,fit,test,reports]`.
"""

import setuptools

# Keras, TensorFlow and JAX each import ml_dtypes when a process starts;
# 0.7.0 takes ~0.8 s to import where 0.6.0 takes 0.01 s (docs/stack.md). The
# training extras hold it below 0.7; the core leaves it to Keras.
FAST_START = ['ml_dtypes>=0.5.1,<0.7']
# What the Keras-only runner (normprop_tf.fit) needs beside the core.
FIT = [
    'gin-config>=0.5.0,<0.6',
    'absl-py>=2.0,<3',
    'pillow>=10,<14',
    *FAST_START,
]
TF = [
    'tensorflow>=2.21,<2.22',
    'tensorboard>=2.21,<2.22',
    'tensorflow-datasets>=4.9.10,<4.10',
    'gin-config>=0.5.0,<0.6',
    'absl-py>=2.0,<3',
    *FAST_START,
]

setuptools.setup(
    name='normprop_tf',
    version='0.2.0',
    description=(
        'Normalization Propagation (Arpit et al., ICML 2016) layers, models '
        'and a reproduction suite for TensorFlow 2 / Keras 3.'),
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['normprop_tf', 'normprop_tf.*',
                                               'data_prep', 'data_prep.*']),
    python_requires='>=3.11',
    # Ranges, not pins: these versions were resolved together
    # (docs/stack.md). tensorflow-addons is deliberately absent: it cannot
    # import on TF 2.21.
    install_requires=[
        'keras>=3.15,<3.16',
        'numpy>=1.26,<3',
    ],
    extras_require={
        'tf': TF,
        'fit': FIT,
        'test': [
            # pytest 9.2 ignores the xdist_group marks that keep each
            # module's shared run on one worker under --dist=loadgroup
            # (pytest-xdist#1386: xdist still renames `_nodeid`).
            'pytest>=8,<9.2',
            'pytest-xdist>=3.5,<4',
            # The backend-independence test runs the layers under JAX on CPU.
            'jax[cpu]>=0.4.30,<0.11',
            # Exact erf for the Monte Carlo check of GELU's moments.
            'scipy>=1.11,<2',
        ],
        # PNG bytes of the report change across matplotlib releases; the
        # byte-for-byte report test needs this release line.
        'reports': ['matplotlib>=3.11.2,<3.12'],
    },
    license='Apache-2.0',
)
