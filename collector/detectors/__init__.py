"""Detection: turning interval energy and readings into findings that facility managers act on.

Each detector (after-hours load, idle equipment, peak-hour overuse, street-lighting schedule, advertising
cut, data quality) is one module here; :mod:`collector.detectors.findings` is the one shape they all produce, which
the alert store (:mod:`collector.alerts`) and the evaluation both consume.
"""
