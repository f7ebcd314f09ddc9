//! portcullis validation layer.
