"""Speech tasks: PR and ASR (CTC heads, `bench.speech_protocols`) and QbE (DTW, `bench.qbe_protocol`)."""

from __future__ import annotations

from .clip_runner import PartialResult

__all__ = ["run_speech"]


def run_speech(req, spec, protocol: str, upstream, device, log=print) -> PartialResult:
    """Evaluate `upstream` on `req.task` in {"pr", "asr", "qbe"}; `bench.run` writes the record."""
    if req.task in ("pr", "asr"):
        from .speech_protocols import run_ctc

        return run_ctc(req, spec, protocol, upstream, device, log)
    if req.task == "qbe":
        from .qbe_protocol import run_qbe

        return run_qbe(req, spec, protocol, upstream, device, log)
    raise ValueError(f"'{req.task}' is not a speech task (pr, asr, qbe)")
