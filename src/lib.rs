//! portcullis: an LLM API gateway built as a stack of composable tower layers.
//!
//! The binary (`src/main.rs`) is thin: it parses the command line ([`cli`]) and calls into
//! this library, which holds the configuration ([`config`]), the upstream client and model
//! router ([`upstream`]), the assembly of the layer stack ([`stack`]), the edge that turns
//! errors into responses ([`error`]), the gateway's own endpoints ([`admin`]), hot reload
//! ([`reload`]), serving ([`server`], on the binary's serving threads: [`workers`]) and
//! telemetry.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod convert;
pub mod decode;
pub mod error;
pub mod models;
pub mod reload;
pub mod server;
pub mod stack;
pub mod state;
pub mod telemetry;
pub mod upstream;
pub mod workers;
