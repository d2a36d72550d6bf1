"""Small helpers every layer may use: one-line user errors, network checks, content fingerprints, memory release."""
