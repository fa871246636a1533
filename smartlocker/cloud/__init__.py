"""The cloud: storage, business rules, ingest and the operator API.

Business rules live here once; :mod:`.ingest` and :mod:`.api` call them:
:mod:`.rules` (lifecycle, allocation, codes, parcels, commands, alerts, presence,
fees, fleet), :mod:`.reactions` (what cabinet traffic means), :mod:`.downlink`
(signed commands and desired state), :mod:`.keys`, :mod:`.settings`,
:mod:`.errors`. See docs/cloud.md.
"""
