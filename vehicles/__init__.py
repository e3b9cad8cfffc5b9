"""QKD-IoV vehicles layer: composes the QKD engine and the key ledger.

Today it holds the ``qkdiov`` command line (which gathers the commands of both lower
layers); the SimPy V2V/V2I simulator lands here next.
"""
