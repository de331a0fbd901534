"""Mechanisms every service shares. Nothing in here knows about users, orders or notifications."""
