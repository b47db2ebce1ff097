"""The analysts' reports, one module per report; ``core`` holds their shared shape.

Every value an analyst supplies travels as a bound parameter (see ``core``).
"""
