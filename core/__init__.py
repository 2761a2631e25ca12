"""The shared core: what the gateway, the adapters and the broker all speak.

The domain (statuses, state machine, step DAG, mappings, errors, ids), the catalog's model
(agencies, services, steps), the one settings object, logging and metrics helpers.  This
package imports nothing else of ours (DESIGN §7); everything else may import it.
"""
