"""SICSRec."""
