"""Spectral science: calibration, processing, fingerprints, screening, matching.

Modules (docs/SPECTRA.md has the full chain):
  acquire      dark frame, auto-integration, averaging against a small driver Protocol
  calibration  Hg-Ar wavelength fit and halogen response
  process      counts -> device-independent spectrum on a fixed grid
  peaks        the peak table of known diamond centres and the Raman check
  fingerprint  D=256 vector; matching: probe vs N references
  screening    PASS / REFER with reasons
  artifact     spectra as deterministic CBOR bytes (RFC 8746 float32 arrays)
  cli          `station fingerprint compute|match`, `station screen`

This package's __init__ imports nothing, so the CLI starts without numpy.
"""
