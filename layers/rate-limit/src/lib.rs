//! portcullis rate-limit layer.
