//! The three API shapes whose answers are watched, and how each ends a stream with an error.

/// Which API a request speaks, decided by its path (one type for every layer that
/// reads the three APIs).
pub use portcullis_core::api::Api;
