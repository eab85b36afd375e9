"""Where agents get documents: local folders, Gmail, Outlook, Teams (one contract)."""
