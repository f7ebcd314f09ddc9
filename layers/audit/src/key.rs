//! [`KeyName`]: which gateway key a request came with (the type lives in
//! `portcullis-core`, so the gateway's key auth and every layer share one).

pub use portcullis_core::KeyName;
