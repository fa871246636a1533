"""Simulators that drive the real code: a virtual cabinet on mock pins."""
