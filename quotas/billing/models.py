"""Stripe customers, SU packs, checkout sessions, webhook events, meter reports, invoices."""
