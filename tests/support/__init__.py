"""Helpers shared by the test suites: a test PKI and a synchronous MQTT client."""
