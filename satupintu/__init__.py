"""Satu Pintu for front offices: ``satupintu.client`` talks to a gateway over HTTP."""
