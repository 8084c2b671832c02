"""``uptake demo``: the local stack adopting two locally built tiny releases, end to end.

It is how a newcomer meets uptake: nothing is downloaded, nothing is mocked. The demo writes
a config (a ``dir`` source, the legal track, the gate in auto mode), starts the same
``LocalStack`` that ``uptake up`` runs, drops two tiny models into the watched folder one after
the other, follows the events on the bus, and reads every number it prints from MLflow.
"""
