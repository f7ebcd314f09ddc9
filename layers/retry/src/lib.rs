//! portcullis retry layer.
