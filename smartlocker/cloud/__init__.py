"""The cloud: storage, business rules, ingest and the operator API.

Business rules live here once; :mod:`.ingest` and :mod:`.api` call them.
"""
