"""The Directive 20 reports for the Department of Industry and Trade, from the ledger's 15-minute intervals.

- :mod:`collector.saving.figures`: R3 monthly use per unit against the same month last year; R1/R5/R8 year
  to date against last year and each unit's target, R2 the province's total; R11 losses of meter trees.
- :mod:`collector.saving.weather`: a monthly weather model per unit and, where it passes ASHRAE Guideline 14,
  a weather-normalised saving beside the raw one.
- :mod:`collector.saving.export`: the same reports as CSV and as an XLSX workbook laid out for the Department.
"""
