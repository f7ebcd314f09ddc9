//! portcullis: an LLM API gateway built as a stack of composable tower layers.
//!
//! The binary (`src/main.rs`) is thin: it parses the command line and calls into this library,
//! which holds the configuration ([`config`]), the upstream client and model router
//! ([`upstream`]), the assembly of the layer stack ([`stack`]) and the gateway's own endpoints.

pub mod mock;
