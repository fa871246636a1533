"""Simulators that drive the real code: a virtual cabinet (the real agent on mock
pins plus a simulated world) and a light fleet that speaks the same protocol."""
