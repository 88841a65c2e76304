"""Sensors: what starts runs when something happens (a delivery lands)."""
