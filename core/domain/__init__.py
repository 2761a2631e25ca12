"""The domain: statuses, the state machine, combined status, the step DAG, mappings.

Pure Python: imports no framework and does no I/O, so it is tested without one.
"""
