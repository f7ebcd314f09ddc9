//! portcullis circuit-breaker layer.
