"""An independent soundness oracle for numgrade's error analysis.

Nothing here imports numgrade's analyses, its formats module or its ideal interpreter: the
program generator (gen.py) builds its own expression trees and renders them to Grade text, the
ideal value is computed by our own mpmath/Fraction evaluator over those trees (ideal.py), the
number formats are re-derived from the IEEE 754 / OCP tables (fmts.py), and check.py compares
numgrade's *computed* value (reference backend) against the ideal and numgrade's reported bound.
"""
