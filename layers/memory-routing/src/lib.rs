//! portcullis memory-routing layer.
