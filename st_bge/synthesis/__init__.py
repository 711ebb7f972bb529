"""Cold start (`st-bge data synth`): passages (`passages`) -> a query writer (`generators`, run and resumed by
`journal`) -> filters (`filters`) -> a training file and a held-out set (`pipeline`, which lists what it writes)."""

from st_bge.synthesis.generators import SynthError
from st_bge.synthesis.pipeline import SynthResult, report_rows, synth

__all__ = ["SynthError", "SynthResult", "report_rows", "synth"]
