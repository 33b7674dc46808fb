"""Preference data: reading records in any supported layout, tokenising, batching."""
