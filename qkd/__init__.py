"""QKD-IoV quantum key distribution engine (BB84 and E91 on Qiskit Aer).

A pure library: it imports nothing from ``ledger`` or ``vehicles``.
"""
