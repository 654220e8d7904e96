//! BPF filter text for the capture, built from the doors and the local addresses.
