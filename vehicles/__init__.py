"""QKD-IoV vehicles layer: composes the QKD engine and the key ledger.

It holds the SimPy V2V/V2I simulator and the ``qkdiov`` command line (which gathers
the commands of both lower layers).
"""
