"""The offline lab: public-dataset readers, evaluation, benchmarks and fall-model training.

Nothing in the service imports this package; it imports the engine
(:mod:`posture`) to measure it. The ``evaluate`` and ``bench`` subcommands
of ``posture-monitor`` come from here.
"""
