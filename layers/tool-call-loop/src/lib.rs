//! Tool-call loop detection (in progress).
