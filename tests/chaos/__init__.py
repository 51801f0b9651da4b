"""The chaos suite: a known workload through plain SQL, faults on purpose, and a ledger that counts.

``workload`` writes the changes and records the committed ones, ``receivers`` collect verified
deliveries, ``ledger`` compares the two and prints the summary line, ``processes`` and ``faults``
break things, ``scenario`` puts one run together on a stack of its own. ``WALHOOK_CHAOS_CHANGES``
sets the committed changes per scenario.
"""
