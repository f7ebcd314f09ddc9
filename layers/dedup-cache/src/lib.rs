//! portcullis dedup-cache layer.
