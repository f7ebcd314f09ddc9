//! portcullis cookie-session layer.
